//! Deleting an account: exactly its rows go, in one transaction, logged child before parent.

use std::sync::Arc;

use coffer_types::{SecretId, StoreId, Version};
use tokio::task::JoinSet;

use super::fixtures::{
    Tenant, account_record, all_changes, assert_chain, assert_chain_from, assert_head,
    retained_changes, secret, secret_query, store_query, store_record, token_record, ts,
    wrapped_key,
};
use crate::{
    AccountRecord, Change, DekRecord, Direction, Entity, Page, SecretRecord, SecretUpdate, Storage,
    StorageError, StoreOrder, StoreRecord, TokenRecord, VersionRecord,
};

/// Everything written for one account, to look it up again afterwards.
#[derive(Debug)]
struct Holdings {
    account: AccountRecord,
    deks: Vec<DekRecord>,
    stores: Vec<StoreRecord>,
    /// (store, secret) of every secret.
    secrets: Vec<(StoreId, SecretId)>,
    versions: Vec<(SecretId, Version)>,
    tokens: Vec<TokenRecord>,
}

/// An account with a quota override, a stored DEK and one carried by a write, three stores (one
/// empty), three secrets (one updated to a second version under the carried DEK) and two tokens
/// (one revoked).
async fn populate(s: &dyn Storage, name: &str) -> Holdings {
    let mut account = account_record(name);
    s.create_account(account.clone(), &[]).await.unwrap();
    s.set_account_quota(account.id, Some(50), &[])
        .await
        .unwrap();
    account.secrets_quota = Some(50);
    let stored_dek = DekRecord {
        account_id: account.id,
        key: wrapped_key(1),
        rk: None,
    };
    s.put_dek(stored_dek.clone()).await.unwrap();
    let carried_dek = DekRecord {
        account_id: account.id,
        key: wrapped_key(2),
        rk: None,
    };
    let t = Tenant {
        account: account.id,
        dek: stored_dek.key.id,
    };

    let stores: Vec<StoreRecord> = ["alpha", "beta", "empty"]
        .iter()
        .map(|n| store_record(account.id, n))
        .collect();
    for st in &stores {
        s.create_store(st.clone(), 10, &[]).await.unwrap();
    }
    let (alpha, beta) = (stores[0].id, stores[1].id);
    let a1 = secret(t, alpha, "A1");
    let a2 = secret(t, alpha, "A2");
    s.create_secrets(account.id, alpha, vec![a1.clone(), a2.clone()], 50, &[])
        .await
        .unwrap();
    let mut b1 = secret(t, beta, "B1");
    b1.value.dek_id = carried_dek.key.id;
    b1.dek = Some(carried_dek.clone());
    s.create_secrets(account.id, beta, vec![b1.clone()], 50, &[])
        .await
        .unwrap();
    s.update_secret(
        SecretUpdate {
            account_id: account.id,
            store_id: alpha,
            secret_id: a1.record.id,
            expected_version: Version::FIRST,
            value: Some(VersionRecord {
                secret_id: a1.record.id,
                version: Version(2),
                dek_id: carried_dek.key.id,
                sealed: b"a1 v2".to_vec(),
                created: ts(30),
            }),
            dek: None,
            scopes: None,
            comment: Some("rotated".into()),
            modified: ts(30),
        },
        &[],
    )
    .await
    .unwrap();

    let live = token_record(account.id);
    let mut revoked = token_record(account.id);
    revoked.revoked = Some(ts(8));
    for token in [&live, &revoked] {
        s.create_token(token.clone(), &[]).await.unwrap();
    }

    Holdings {
        account,
        deks: vec![stored_dek, carried_dek],
        stores,
        secrets: vec![
            (alpha, a1.record.id),
            (alpha, a2.record.id),
            (beta, b1.record.id),
        ],
        versions: vec![
            (a1.record.id, Version::FIRST),
            (a1.record.id, Version(2)),
            (a2.record.id, Version::FIRST),
            (b1.record.id, Version::FIRST),
        ],
        tokens: vec![live, revoked],
    }
}

/// What every read of the trait returns about the rows in `h`.
#[derive(Debug, PartialEq)]
struct Seen {
    account: Option<AccountRecord>,
    store_list: Page<StoreRecord>,
    stores: Vec<Option<StoreRecord>>,
    /// `None` where the listing is `NotFound(Store)`.
    secret_lists: Vec<Option<Page<SecretRecord>>>,
    secrets: Vec<Option<SecretRecord>>,
    secret_count: u64,
    versions: Vec<Option<VersionRecord>>,
    deks: Vec<Option<DekRecord>>,
    latest_dek: Option<DekRecord>,
    token_list: Vec<TokenRecord>,
    tokens: Vec<Option<TokenRecord>>,
}

impl Seen {
    /// What the reads must return once the account is gone.
    fn nothing(h: &Holdings) -> Seen {
        Seen {
            account: None,
            store_list: Page {
                items: Vec::new(),
                total_count: 0,
            },
            stores: vec![None; h.stores.len()],
            secret_lists: vec![None; h.stores.len()],
            secrets: vec![None; h.secrets.len()],
            secret_count: 0,
            versions: vec![None; h.versions.len()],
            deks: vec![None; h.deks.len()],
            latest_dek: None,
            token_list: Vec::new(),
            tokens: vec![None; h.tokens.len()],
        }
    }
}

async fn look(s: &dyn Storage, h: &Holdings) -> Seen {
    let id = h.account.id;
    let mut seen = Seen {
        account: s.get_account(id).await.unwrap(),
        store_list: s
            .list_stores(
                id,
                &store_query(1, 100, StoreOrder::Created, Direction::Asc),
            )
            .await
            .unwrap(),
        stores: Vec::new(),
        secret_lists: Vec::new(),
        secrets: Vec::new(),
        secret_count: s.secret_count(id).await.unwrap(),
        versions: Vec::new(),
        deks: Vec::new(),
        latest_dek: s.latest_dek(id).await.unwrap(),
        token_list: s.list_tokens(id).await.unwrap(),
        tokens: Vec::new(),
    };
    for st in &h.stores {
        seen.stores.push(s.get_store(id, st.id).await.unwrap());
        seen.secret_lists.push(
            match s.list_secrets(id, st.id, &secret_query(1, 100)).await {
                Ok(page) => Some(page),
                Err(StorageError::NotFound(Entity::Store)) => None,
                Err(e) => panic!("list_secrets: {e:?}"),
            },
        );
    }
    for (st, secret) in &h.secrets {
        seen.secrets
            .push(s.get_secret(id, *st, *secret).await.unwrap());
    }
    for (secret, version) in &h.versions {
        seen.versions
            .push(s.get_version(*secret, *version).await.unwrap());
    }
    for dek in &h.deks {
        seen.deks.push(s.get_dek(dek.key.id).await.unwrap());
    }
    for token in &h.tokens {
        seen.tokens.push(s.get_token(token.id).await.unwrap());
    }
    seen
}

/// The entries `delete_account` must append for `h`: secrets by store id then secret id,
/// stores by id, then the account.
fn deletion_entries(h: &Holdings) -> Vec<Change> {
    let account_id = h.account.id;
    let mut stores: Vec<StoreId> = h.stores.iter().map(|st| st.id).collect();
    stores.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
    let mut secrets = h.secrets.clone();
    secrets.sort_by(|x, y| (x.0.as_bytes(), x.1.as_bytes()).cmp(&(y.0.as_bytes(), y.1.as_bytes())));
    let mut out: Vec<Change> = secrets
        .into_iter()
        .map(|(store_id, secret_id)| Change::SecretDeleted {
            account_id,
            store_id,
            secret_id,
        })
        .collect();
    out.extend(stores.into_iter().map(|store_id| Change::StoreDeleted {
        account_id,
        store_id,
    }));
    out.push(Change::AccountDeleted { account_id });
    out
}

pub(super) async fn delete_account_removes_exactly_its_rows(s: Arc<dyn Storage>) {
    let s = &*s;
    let gone = populate(s, "gone").await;
    let kept = populate(s, "kept").await;

    let before = look(s, &gone).await;
    // Not vacuous: every row the deletion must remove is there to begin with.
    assert!(before.account.is_some() && before.latest_dek.is_some());
    assert_eq!(before.secret_count, 3);
    assert_eq!(before.store_list.total_count, 3);
    assert_eq!(before.token_list.len(), 2);
    for present in [
        before.stores.iter().all(Option::is_some),
        before.secret_lists.iter().all(Option::is_some),
        before.secrets.iter().all(Option::is_some),
        before.versions.iter().all(Option::is_some),
        before.deks.iter().all(Option::is_some),
        before.tokens.iter().all(Option::is_some),
    ] {
        assert!(present, "populate wrote every row: {before:?}");
    }
    let kept_before = look(s, &kept).await;
    let head = s.change_head().await.unwrap();

    s.delete_account(gone.account.id, &[]).await.unwrap();

    assert_eq!(
        look(s, &gone).await,
        Seen::nothing(&gone),
        "no row of the deleted account remains: account, stores, secrets, versions, DEKs \
         (no wrapped key is left), tokens"
    );
    assert_eq!(
        look(s, &kept).await,
        kept_before,
        "another account is untouched"
    );
    assert_eq!(s.list_accounts().await.unwrap(), vec![kept.account.clone()]);

    let (base, base_hash, log) = retained_changes(s).await;
    assert_chain_from(base, base_hash, &log);
    // The deleted account's DEKs went with it from the log too: it is compacted past every
    // entry naming one (their DekPuts, the values sealed under them).
    assert!(
        base > 0 && base <= head,
        "compacted to {base}, head was {head}"
    );
    for dek in &gone.deks {
        let needle = format!("\"dek_id\":\"{}\"", dek.key.id);
        assert!(
            log.iter()
                .all(|r| !String::from_utf8_lossy(&r.payload).contains(&needle)),
            "a retained entry names deleted DEK {}",
            dek.key.id
        );
    }
    let appended: Vec<Change> = log[(head - base) as usize..]
        .iter()
        .map(|c| c.change().unwrap())
        .collect();
    assert_eq!(
        appended,
        deletion_entries(&gone),
        "one SecretDeleted per secret (by store id, then secret id), one StoreDeleted per store \
         (by id), then AccountDeleted"
    );

    // The surviving account's count and quota still add up.
    let kept_tenant = Tenant {
        account: kept.account.id,
        dek: kept.deks[0].key.id,
    };
    let alpha = kept.stores[0].id;
    s.create_secrets(
        kept.account.id,
        alpha,
        vec![secret(kept_tenant, alpha, "NEW")],
        4,
        &[],
    )
    .await
    .expect("the kept account may fill its quota");
    assert_eq!(s.secret_count(kept.account.id).await.unwrap(), 4);
    let err = s
        .create_secrets(
            kept.account.id,
            alpha,
            vec![secret(kept_tenant, alpha, "OVER")],
            4,
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::QuotaExceeded {
                quota: 4,
                usage: 4,
                requested: 1
            }
        ),
        "{err:?}"
    );
}

pub(super) async fn delete_account_of_an_empty_account(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = account_record("bare");
    s.create_account(a.clone(), &[]).await.unwrap();
    let head = s.change_head().await.unwrap();
    s.delete_account(a.id, &[]).await.unwrap();
    let log = all_changes(s).await;
    assert_chain(&log);
    assert_eq!(
        log[head as usize..]
            .iter()
            .map(|c| c.change().unwrap())
            .collect::<Vec<_>>(),
        vec![Change::AccountDeleted { account_id: a.id }],
        "an account holding nothing appends AccountDeleted alone"
    );
    assert_eq!(s.get_account(a.id).await.unwrap(), None);
}

pub(super) async fn delete_account_of_a_missing_account_writes_nothing(s: Arc<dyn Storage>) {
    let s = &*s;
    let h = populate(s, "acme").await;
    let head = s.change_head().await.unwrap();

    let err = s
        .delete_account(account_record("ghost").id, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Account)),
        "deleting an unknown account: {err:?}"
    );
    assert_head(s, head, "delete_account of an unknown account").await;

    s.delete_account(h.account.id, &[]).await.unwrap();
    let head = s.change_head().await.unwrap();
    let err = s.delete_account(h.account.id, &[]).await.unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Account)),
        "deleting an account twice: {err:?}"
    );
    assert_head(s, head, "delete_account of a deleted account").await;

    // Nothing can be added under the deleted account.
    let id = h.account.id;
    let err = s
        .create_store(store_record(id, "again"), 10, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Account)),
        "{err:?}"
    );
    let err = s.create_token(token_record(id), &[]).await.unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Account)),
        "{err:?}"
    );
    let err = s
        .put_dek(DekRecord {
            account_id: id,
            key: wrapped_key(5),
            rk: None,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Account)),
        "{err:?}"
    );
    let err = s
        .revoke_token(id, h.tokens[0].id, ts(40), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Token)),
        "{err:?}"
    );
    assert_head(s, head, "writes to a deleted account").await;

    // Its id is free again, and nothing lingers under it: names, counts, tokens.
    s.create_account(h.account.clone(), &[]).await.unwrap();
    assert_eq!(s.secret_count(id).await.unwrap(), 0);
    assert!(s.list_tokens(id).await.unwrap().is_empty());
    assert_eq!(s.latest_dek(id).await.unwrap(), None);
    s.create_store(store_record(id, "alpha"), 1, &[])
        .await
        .expect("no store of the old account counts against the name or the limit");
}

/// Creates in the account while it is being deleted: each either lands before the deletion
/// (and is deleted with it, and logged so) or fails, and nothing of the account follows its
/// `AccountDeleted` in the log. Another account's concurrent creates are unaffected.
pub(super) async fn delete_account_racing_creates_leaves_nothing(s: Arc<dyn Storage>) {
    const TASKS: usize = 40;
    let gone = populate(&*s, "gone").await;
    let kept = populate(&*s, "kept").await;
    let tenant_of = |h: &Holdings| Tenant {
        account: h.account.id,
        dek: h.deks[0].key.id,
    };
    let (g, k) = (tenant_of(&gone), tenant_of(&kept));
    let (g_store, k_store) = (gone.stores[2].id, kept.stores[2].id);

    let mut tasks = JoinSet::new();
    for i in 0..TASKS {
        if i == TASKS / 2 {
            let s = Arc::clone(&s);
            tasks.spawn(async move { (None, s.delete_account(g.account, &[]).await) });
        }
        for (t, st) in [(g, g_store), (k, k_store)] {
            let s = Arc::clone(&s);
            tasks.spawn(async move {
                let new = secret(t, st, &format!("R{i}"));
                (
                    Some(t.account),
                    s.create_secrets(t.account, st, vec![new], 1000, &[]).await,
                )
            });
        }
    }
    let mut kept_created = 0u64;
    for (who, result) in tasks.join_all().await {
        match (who, result) {
            (None, result) => result.expect("the deletion succeeds"),
            (Some(a), Ok(())) if a == k.account => kept_created += 1,
            (Some(a), result) => {
                assert_eq!(a, g.account);
                if let Err(e) = result {
                    assert!(
                        matches!(e, StorageError::NotFound(Entity::Store | Entity::Account)),
                        "a create in a deleted account: {e:?}"
                    );
                }
            }
        }
    }
    assert_eq!(
        kept_created, TASKS as u64,
        "the other account's creates all succeed"
    );
    assert_eq!(s.secret_count(k.account).await.unwrap(), 3 + TASKS as u64);
    assert_eq!(s.get_account(g.account).await.unwrap(), None);
    assert_eq!(s.secret_count(g.account).await.unwrap(), 0);

    let (base, base_hash, log) = retained_changes(&*s).await;
    assert_chain_from(base, base_hash, &log);
    let changes: Vec<Change> = log.iter().map(|c| c.change().unwrap()).collect();
    let end = changes
        .iter()
        .position(|c| {
            *c == Change::AccountDeleted {
                account_id: g.account,
            }
        })
        .expect("AccountDeleted is logged");
    assert!(
        changes[end + 1..]
            .iter()
            .all(|c| c.account_id() != Some(g.account)),
        "nothing of the account follows its AccountDeleted"
    );
    // Every secret of the account put before the deletion is deleted by it.
    for (i, change) in changes[..end].iter().enumerate() {
        if let Change::SecretPut {
            account_id,
            store_id,
            secret_id,
            ..
        } = change
            && *account_id == g.account
        {
            let deleted = Change::SecretDeleted {
                account_id: g.account,
                store_id: *store_id,
                secret_id: *secret_id,
            };
            assert!(
                changes[i + 1..end].contains(&deleted),
                "a secret put before the deletion is logged as deleted by it"
            );
        }
    }
}
