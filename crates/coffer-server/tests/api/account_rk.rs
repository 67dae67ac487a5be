//! Account replication keys: deleting an account with its own KEK shreds the replication-key
//! wraps of its DEKs too. A copy of the data dir taken before the delete holds the account's
//! replication key (ARK) wrapped by the account's KEK alone, and its DEKs RK-wrapped by that ARK
//! alone: no key the running instance still holds (instance KEK, every RK version, every other
//! account's KEK and ARK) opens either.

use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use axum::http::Method;
use coffer_crypto::{
    CryptoError, DataKey, DekContext, FileKek, KekProvider, WrappedDataKey, ark_context,
    ark_purpose, ark_unwrap, rk_unwrap,
};
use coffer_types::{AccountId, DekId};
use serde_json::json;

use crate::account_kek::{
    copied_rows, copy_tree, dek_ctx, fast_keys, id16, open_value, put_secrets, restore, set_kek,
    wait_moved,
};
use crate::support::*;

/// An ARK version as stored (wrapped by its account's KEK).
struct StoredArk {
    account: AccountId,
    version: u32,
    id: DekId,
    wrapped: Vec<u8>,
}

/// A DEK's replication-key wrap as stored: (id, version, wrap, by the account's ARK).
struct DekRk {
    id: DekId,
    version: u32,
    wrapped: Vec<u8>,
    ark: bool,
}

fn arks(db: &Path) -> Vec<StoredArk> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT account_id, version, key_id, wrapped FROM account_replication_keys")
        .unwrap();
    stmt.query_map([], |row| {
        Ok(StoredArk {
            account: AccountId::from_bytes(id16(row.get(0)?)),
            version: row.get(1)?,
            id: DekId::from_bytes(id16(row.get(2)?)),
            wrapped: row.get(3)?,
        })
    })
    .unwrap()
    .collect::<Result<Vec<_>, _>>()
    .unwrap()
}

fn dek_rk_wraps(db: &Path, account: AccountId) -> Vec<DekRk> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, rk_version, rk_wrapped, rk_account FROM deks WHERE account_id = ?1")
        .unwrap();
    stmt.query_map([account.as_bytes().to_vec()], |row| {
        Ok(DekRk {
            id: DekId::from_bytes(id16(row.get(0)?)),
            version: row.get(1)?,
            wrapped: row.get(2)?,
            ark: row.get(3)?,
        })
    })
    .unwrap()
    .collect::<Result<Vec<_>, _>>()
    .unwrap()
}

/// The `DekPut` wraps of `account` in a copied change log: (dek, kek id, wrap).
fn logged_dek_puts(db: &Path, account: AccountId) -> Vec<(DekId, String, Vec<u8>)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare("SELECT payload FROM changes").unwrap();
    let payloads: Vec<Vec<u8>> = stmt
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    payloads
        .iter()
        .filter_map(|p| match serde_json::from_slice(p).unwrap() {
            coffer_storage::Change::DekPut {
                account_id,
                dek_id,
                kek_id,
                wrapped_hex,
            } if account_id == account => Some((dek_id, kek_id, hex::decode(wrapped_hex).unwrap())),
            _ => None,
        })
        .collect()
}

fn open_with(kek: &FileKek, bytes: &[u8], ctx: &DekContext<'_>) -> Result<DataKey, CryptoError> {
    kek.unwrap(
        &WrappedDataKey {
            kek_id: kek.current_kek_id(),
            bytes: bytes.to_vec(),
        },
        ctx,
    )
}

fn open_ark(kek: &FileKek, ark: &StoredArk) -> Result<DataKey, CryptoError> {
    let purpose = ark_purpose(ark.version);
    open_with(
        kek,
        &ark.wrapped,
        &ark_context(ark.account, ark.id, &purpose),
    )
}

/// Every key file (`*.key`) in `dir`.
fn key_files(dir: &Path) -> Vec<FileKek> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "key"))
        .map(|p| FileKek::open(&p).unwrap())
        .collect()
}

#[tokio::test]
async fn deleting_an_account_leaves_a_prior_copy_whose_replication_wraps_nothing_held_opens() {
    let h = Harness::with_keys(fast_keys()).await;
    // The doomed account: values written before it gets its KEK (their DEKs are RK-wrapped by
    // the instance RK until the lifecycle job moves them) and after.
    let (doomed, admin, store) = h.other_account_with_secret("before-kek").await;
    put_secrets(&h, &doomed, &admin, &store, "early", 3).await;
    assert_ok(&set_kek(&h, &doomed, "file").await);
    put_secrets(&h, &doomed, &admin, &store, "late", 3).await;
    wait_moved(&h, &doomed).await;
    h.coffer
        .run_dek_lifecycle_pass(coffer_server::ResealSettings {
            batch: 3,
            pause: Duration::ZERO,
            interval: Duration::from_secs(3600),
            keep_versions: 1,
            compaction_gap: Duration::ZERO,
        })
        .await
        .unwrap();
    // A surviving account with its own KEK (and ARK), and the operator's own values.
    let kept = h.create_account("kept").await;
    let kept_admin = h.issue_token(&kept, "kept-admin", "super_admin").await;
    let r = h
        .send_as(
            Method::POST,
            &format!("{V4}/{kept}/secrets_store/stores"),
            Some(&kept_admin.bearer()),
            Some(&json!({ "name": "k" })),
        )
        .await;
    let kept_store = assert_hex_id(&assert_ok(&r)["id"]);
    assert_ok(&set_kek(&h, &kept, "file").await);
    put_secrets(&h, &kept, &kept_admin, &kept_store, "k", 2).await;
    let own_store = h.create_store("own").await;
    h.create_secret(&own_store, "own", "own-value").await;

    let before = copy_tree(&h.data_dir);
    let r = h
        .raw_abs(
            Method::DELETE,
            &format!("{V4}/{doomed}"),
            None,
            Body::empty(),
        )
        .await;
    assert_deleted(&r);
    let copy = tempfile::tempdir().unwrap();
    restore(&before, copy.path());
    let copied_db = copy.path().join("coffer.db");
    let live_db = h.data_dir.join("coffer.db");
    let account: AccountId = doomed.parse().unwrap();
    let kept_id: AccountId = kept.parse().unwrap();

    // The copy: the account's ARK, its DEKs all RK-wrapped by it (the lifecycle pass moved the
    // values of the DEKs the instance RK wrapped, and destroyed those DEKs), its values, and no
    // change-log entry carrying one of its DEKs under the instance RK.
    let copied_arks: Vec<StoredArk> = arks(&copied_db)
        .into_iter()
        .filter(|a| a.account == account)
        .collect();
    assert_eq!(copied_arks.len(), 1, "one ARK version in the copy");
    let deks = dek_rk_wraps(&copied_db, account);
    let (_, values) = copied_rows(&copied_db, account);
    assert_eq!(values.len(), 7);
    assert!(!deks.is_empty());
    assert!(
        deks.iter().all(|d| d.ark && d.version == 1),
        "every DEK of the account in the copy is wrapped by its ARK"
    );
    let logged = logged_dek_puts(&copied_db, account);
    assert!(
        logged.iter().all(|(_, kek_id, _)| kek_id == "ark:1"),
        "the copied log carries the account's DEKs only under its ARK: {:?}",
        logged.iter().map(|l| &l.1).collect::<Vec<_>>()
    );
    // Everything to try: the stored DEK wraps and the logged ones.
    let mut wraps: Vec<(DekId, Vec<u8>)> = deks.iter().map(|d| (d.id, d.wrapped.clone())).collect();
    wraps.extend(logged.into_iter().map(|(id, _, w)| (id, w)));

    // Positive control: the copied account key opens the copied ARK, which opens every copied
    // DEK wrap, which opens every copied value.
    let copied_key =
        FileKek::open(&copy.path().join(format!("account-keks/{doomed}.key"))).unwrap();
    let ark = open_ark(&copied_key, &copied_arks[0]).expect("the copied account key opens its ARK");
    for (id, wrapped) in &wraps {
        ark_unwrap(&ark, 1, wrapped, &dek_ctx(account, *id)).expect("the copied ARK opens it");
    }
    for v in &values {
        let d = deks
            .iter()
            .find(|d| d.id == v.dek)
            .expect("its DEK is in the copy");
        let key = ark_unwrap(&ark, 1, &d.wrapped, &dek_ctx(account, d.id)).unwrap();
        assert!(open_value(&key, account, v).is_some());
    }

    // What the running instance holds after the delete: its KEK files, the kept account's KEK,
    // every RK version (opened by the live instance KEK), the kept account's ARK.
    assert!(
        arks(&live_db).iter().all(|a| a.account != account),
        "the ARK rows are gone"
    );
    let instance = key_files(&h.data_dir);
    let accounts = key_files(&h.data_dir.join("account-keks"));
    assert_eq!(accounts.len(), 1, "only the kept account's KEK is left");
    let conn = rusqlite::Connection::open(&live_db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT purpose, key_id, wrapped FROM instance_keys
             WHERE purpose LIKE 'replication-key:%'",
        )
        .unwrap();
    let rks: Vec<(u32, DataKey)> = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                id16(row.get(1)?),
                row.get::<_, Vec<u8>>(2)?,
            ))
        })
        .unwrap()
        .map(|r| {
            let (purpose, id, wrapped) = r.unwrap();
            let version = purpose["replication-key:".len()..].parse().unwrap();
            let ctx = DekContext {
                account: None,
                dek: DekId::from_bytes(id),
                purpose: &purpose,
            };
            let key = instance
                .iter()
                .find_map(|k| open_with(k, &wrapped, &ctx).ok())
                .expect("the live instance KEK opens every RK version");
            (version, key)
        })
        .collect();
    assert!(!rks.is_empty());
    let kept_arks: Vec<(u32, DataKey)> = arks(&live_db)
        .iter()
        .filter(|a| a.account == kept_id)
        .map(|a| {
            (
                a.version,
                open_ark(&accounts[0], a).expect("the kept ARK opens"),
            )
        })
        .collect();
    assert_eq!(kept_arks.len(), 1);

    for kek in instance.iter().chain(&accounts) {
        assert!(
            matches!(open_ark(kek, &copied_arks[0]), Err(CryptoError::Opaque)),
            "{} opens the deleted account's ARK",
            kek.current_kek_id()
        );
    }
    for (id, wrapped) in &wraps {
        let ctx = dek_ctx(account, *id);
        for kek in instance.iter().chain(&accounts) {
            assert!(open_with(kek, wrapped, &ctx).is_err());
        }
        for (version, key) in rks.iter().chain(&kept_arks) {
            for v in 1..=*version + 1 {
                assert!(
                    rk_unwrap(key, v, wrapped, &ctx).is_err(),
                    "a live key opens a copied DEK"
                );
                assert!(
                    ark_unwrap(key, v, wrapped, &ctx).is_err(),
                    "a live key opens a copied DEK"
                );
            }
        }
    }

    // The other accounts serve on.
    h.create_secret(&own_store, "own2", "v").await;
    put_secrets(&h, &kept, &kept_admin, &kept_store, "k-after", 1).await;
}
