//! Account replication keys: deleting an account with its own KEK shreds the replication-key
//! wraps of its DEKs too. A copy of the data dir taken before the delete holds the account's
//! replication key (ARK) wrapped by the account's KEK alone, and its DEKs RK-wrapped by that ARK
//! alone: no key the running instance still holds (instance KEK, every RK version, every other
//! account's KEK and ARK) opens either.

use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use coffer_crypto::{
    CryptoError, DataKey, DekContext, FileKek, Grant, KekProvider, NodeKey, WrappedDataKey,
    ark_context, ark_purpose, ark_unwrap, rk_unwrap,
};
use coffer_types::{AccountId, DekId, TokenId};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

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
    if SqliteOnly::KeyRotation.skip() {
        return;
    }
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

const NODE_KEY: &str = "/replication/v1/node-key";

fn account_key_uri(account: &str) -> String {
    format!("{NODE_KEY}/accounts/{account}")
}

async fn put_key(
    app: &axum::Router,
    uri: &str,
    token: &str,
    public: &NodeKey,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(Method::PUT)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({ "public_key": hex::encode(public.public_key().as_bytes()) }).to_string(),
        ))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

async fn delete_node(app: &axum::Router, token: &str, node: &str) -> StatusCode {
    let req = Request::builder()
        .method(Method::DELETE)
        .uri(nodes_uri(Some(node)))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    app.clone().oneshot(req).await.unwrap().status()
}

/// The ARK of `account` opened from its grant to `node`, with `key` as the node's key for the
/// account and `node_key` as its node key.
async fn granted_ark(
    h: &Harness,
    account: AccountId,
    node: TokenId,
    version: u32,
    key: &NodeKey,
    node_key: &NodeKey,
) -> Option<DataKey> {
    let grants = h
        .coffer
        .storage()
        .account_grants(account, version)
        .await
        .unwrap();
    let grant = grants.iter().find(|g| g.node_id == node)?;
    key.open_account_grant(
        node_key,
        node,
        account,
        version,
        &Grant {
            ephemeral_public: grant.ephemeral_public,
            sealed: grant.sealed.clone(),
        },
    )
    .ok()
}

/// Opens every ARK-wrapped DEK of `account` in the live database with `ark` of `version`.
async fn opens_every_dek(h: &Harness, account: AccountId, version: u32, ark: &DataKey) -> usize {
    let mut opened = 0;
    for dek in h.coffer.storage().list_deks().await.unwrap() {
        let Some(rk) = dek.rk.filter(|rk| rk.ark && dek.account_id == account) else {
            continue;
        };
        assert_eq!(rk.version, version);
        ark_unwrap(ark, version, &rk.wrapped, &dek_ctx(account, dek.key.id)).unwrap();
        opened += 1;
    }
    opened
}

#[tokio::test]
async fn nodes_register_a_key_per_account_and_a_revocation_rotates_each_account_key() {
    if SqliteOnly::KeyRotation.skip() {
        return;
    }
    let h = Harness::with_keys(fast_keys()).await;
    h.coffer.storage().ensure_cluster_id().await.unwrap();
    let (acct, admin, store) = h.other_account_with_secret("v").await;
    let account: AccountId = acct.parse().unwrap();
    let (a, b) = (h.create_node("edge-a").await, h.create_node("edge-b").await);
    let (a_id, b_id): (TokenId, TokenId) = (a.id.parse().unwrap(), b.id.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let key = |name: &str| NodeKey::create(&dir.path().join(name)).unwrap();
    let (node_a, node_b) = (key("node-a"), key("node-b"));
    let (acct_a, acct_b) = (key("acct-a"), key("acct-b"));
    for (n, k) in [(&a, &node_a), (&b, &node_b)] {
        assert_eq!(
            put_key(&h.app, NODE_KEY, &n.token, k).await.0,
            StatusCode::OK
        );
    }
    // Not before the account has a replication key of its own: nothing would be granted, and
    // a node token alone could take the key's place ahead of the edge. Refused, nothing
    // written, and the refusal audited in the operator's log only (the node holds no key for
    // the account): fixed words, the key's fingerprint, never the key.
    let head = h.change_head().await;
    let (status, body) = put_key(&h.app, &account_key_uri(&acct), &a.token, &acct_a).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["code"], 1015, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no replication key of its own"),
        "{body}"
    );
    assert_eq!(h.change_head().await, head);
    let public_hex = hex::encode(acct_a.public_key().as_bytes());
    assert!(key_registrations(&h, account, "failure").await.is_empty());
    let operator: AccountId = h.account.parse().unwrap();
    let refused = key_registrations(&h, operator, "failure").await;
    assert_eq!(refused.len(), 1);
    assert!(
        refused[0].contains("no replication key of its own"),
        "{}",
        refused[0]
    );
    assert!(
        refused[0].contains(&acct_a.public_key().fingerprint()),
        "{}",
        refused[0]
    );
    assert!(!refused[0].contains(&public_hex), "{}", refused[0]);
    // Once its KEK is set (ARK 1): recorded and granted at once.
    assert_ok(&set_kek(&h, &acct, "file").await);
    let (status, body) = put_key(&h.app, &account_key_uri(&acct), &a.token, &acct_a).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["registered"], true, "{body}");
    // Audited in the account's log by the key's fingerprint, never the key itself.
    let registered = key_registrations(&h, account, "success").await;
    assert_eq!(registered.len(), 1);
    let payload = &registered[0];
    assert!(
        payload.contains(&acct_a.public_key().fingerprint()),
        "{payload}"
    );
    assert!(payload.contains(&a.id), "{payload}");
    assert!(!payload.contains(&public_hex), "{payload}");
    let ark = granted_ark(&h, account, a_id, 1, &acct_a, &node_a)
        .await
        .expect("granted");
    // Node b registers after: granted at once.
    let (status, _) = put_key(&h.app, &account_key_uri(&acct), &b.token, &acct_b).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        granted_ark(&h, account, b_id, 1, &acct_b, &node_b)
            .await
            .is_some()
    );
    // A grant needs both of its node's keys: neither alone opens it, nor another node's.
    for (node, key, with) in [
        (a_id, &node_a, &node_a),
        (a_id, &acct_a, &acct_a),
        (a_id, &acct_a, &node_b),
        (b_id, &acct_a, &node_b),
    ] {
        assert!(granted_ark(&h, account, node, 1, key, with).await.is_none());
    }

    // A node token alone captures nothing: whoever holds c's token (not its node key)
    // registers a key of its own for the account first, and is granted the ARK, sealed to
    // that key and c's node key, which it cannot open.
    let c = h.create_node("edge-c").await;
    let c_id: TokenId = c.id.parse().unwrap();
    let node_c = key("node-c");
    // Not before the node key is registered: the grant is sealed to both.
    let (status, body) = put_key(&h.app, &account_key_uri(&acct), &c.token, &key("early")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["code"], 1015, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("node key first"),
        "{body}"
    );
    assert_eq!(
        put_key(&h.app, NODE_KEY, &c.token, &node_c).await.0,
        StatusCode::OK
    );
    let thief = key("thief");
    let (status, _) = put_key(&h.app, &account_key_uri(&acct), &c.token, &thief).await;
    assert_eq!(status, StatusCode::OK);
    let thief_other = key("thief-other");
    for with in [&thief, &thief_other] {
        assert!(
            granted_ark(&h, account, c_id, 1, &thief, with)
                .await
                .is_none(),
            "a node account key registered with a node token alone opens its grant"
        );
    }
    // The real edge's node key is needed (the thief's key is then useless to the edge too:
    // it reports the grant it cannot open).
    assert!(
        granted_ark(&h, account, c_id, 1, &thief, &node_c)
            .await
            .is_some()
    );
    // A key registered for an account is no node key, and the other way round.
    let d = h.create_node("edge-d").await;
    let (status, _) = put_key(&h.app, NODE_KEY, &d.token, &thief).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // New values are sealed under DEKs the ARK wraps; the node account key opens them.
    put_secrets(&h, &acct, &admin, &store, "late", 2).await;
    assert_eq!(opens_every_dek(&h, account, 1, &ark).await, 2);

    // Refusals: another key (first wins), a key in use (as a node key, or for the account by
    // another node), an unknown account, a malformed key. None writes.
    let other = h.create_account("other").await;
    assert_ok(&set_kek(&h, &other, "file").await);
    let head = h.change_head().await;
    let (status, body) = put_key(&h.app, &account_key_uri(&acct), &a.token, &key("x")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["errors"][0]["code"], 1307, "{body}");
    for (token, k) in [(&a.token, &node_a), (&a.token, &acct_b)] {
        let (status, _) = put_key(&h.app, &account_key_uri(&other), token, k).await;
        assert_eq!(status, StatusCode::CONFLICT);
    }
    // No such account: the same answer as an account without a replication key of its own,
    // so a node token cannot tell which accounts exist.
    let (status, body) = put_key(
        &h.app,
        &account_key_uri(&"0".repeat(32)),
        &a.token,
        &key("y"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["code"], 1015, "{body}");
    let r = h
        .send_as(
            Method::PUT,
            &account_key_uri(&acct),
            Some(&format!("Bearer {}", b.token)),
            Some(&json!({ "public_key": "00".repeat(32) })),
        )
        .await;
    assert_err(&r, coffer_api::ErrorCode::InvalidNodeKey, "public_key");
    assert_eq!(h.change_head().await, head, "refusals write nothing");

    // Revoking a: ARK 2, granted to b's account key only; every ARK-wrapped DEK moves to it.
    assert_eq!(delete_node(&h.app, &h.token, &a.id).await, StatusCode::OK);
    let storage = h.coffer.storage();
    assert_eq!(
        storage
            .account_replication_key_versions(account)
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(
        granted_ark(&h, account, a_id, 2, &acct_a, &node_a)
            .await
            .is_none()
    );
    let next = granted_ark(&h, account, b_id, 2, &acct_b, &node_b)
        .await
        .expect("b is granted ARK 2");
    assert_eq!(opens_every_dek(&h, account, 2, &next).await, 2);
    // What a held opens none of them any more.
    for dek in storage.list_deks().await.unwrap() {
        if let Some(rk) = dek.rk.filter(|rk| rk.ark) {
            assert!(ark_unwrap(&ark, 2, &rk.wrapped, &dek_ctx(account, dek.key.id)).is_err());
        }
    }
    // The account keeps serving: a new value lands under ARK 2.
    put_secrets(&h, &acct, &admin, &store, "after", 1).await;
    assert_eq!(opens_every_dek(&h, account, 2, &next).await, 3);
}

/// The payloads of `account`'s audited key registrations with `outcome`.
async fn key_registrations(h: &Harness, account: AccountId, outcome: &str) -> Vec<String> {
    h.coffer
        .storage()
        .audit_entries(account, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.action == "register_key" && r.entry.outcome == outcome)
        .map(|r| String::from_utf8(r.entry.payload).unwrap())
        .collect()
}

/// An account whose KEK is unavailable when a node is revoked keeps its ARK version (nothing of
/// it can be written meanwhile); the revocation goes through and rotates every other key.
#[tokio::test]
async fn a_revocation_skips_the_account_key_of_an_account_whose_kek_is_unavailable() {
    if SqliteOnly::KeyRotation.skip() {
        return;
    }
    let h = Harness::with_keys(fast_keys()).await;
    h.coffer.storage().ensure_cluster_id().await.unwrap();
    let (lost, lost_admin, lost_store) = h.other_account_with_secret("l").await;
    let (kept, _, _) = h.other_account_with_secret("k").await;
    let (lost_id, kept_id): (AccountId, AccountId) = (lost.parse().unwrap(), kept.parse().unwrap());
    assert_ok(&set_kek(&h, &lost, "file").await);
    assert_ok(&set_kek(&h, &kept, "file").await);
    put_secrets(&h, &lost, &lost_admin, &lost_store, "x", 1).await;
    let (a, b) = (h.create_node("edge-a").await, h.create_node("edge-b").await);
    let dir = tempfile::tempdir().unwrap();
    for (n, name) in [(&a, "a"), (&b, "b")] {
        let k = NodeKey::create(&dir.path().join(name)).unwrap();
        assert_eq!(
            put_key(&h.app, NODE_KEY, &n.token, &k).await.0,
            StatusCode::OK
        );
    }

    h.coffer.shutdown().await;
    std::fs::remove_file(h.data_dir.join(format!("account-keks/{lost}.key"))).unwrap();
    let reopened = std::sync::Arc::new(
        coffer_server::open_data_dir_tuned(
            &h.data_dir,
            Default::default(),
            Default::default(),
            fast_keys(),
        )
        .await
        .unwrap()
        .coffer,
    );
    let app = coffer_server::app(reopened.clone());
    // A key for the unavailable account cannot be granted anything: 503, naming it.
    let k = NodeKey::create(&dir.path().join("acct")).unwrap();
    let (status, body) = put_key(&app, &account_key_uri(&lost), &b.token, &k).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["errors"][0]["code"], 1503, "{body}");

    assert_eq!(delete_node(&app, &h.token, &a.id).await, StatusCode::OK);
    let storage = reopened.storage();
    let versions: Vec<(AccountId, u32)> = storage
        .account_replication_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|(a, v, _)| (a, v))
        .collect();
    assert!(versions.contains(&(lost_id, 1)), "{versions:?}");
    assert!(versions.contains(&(kept_id, 2)), "{versions:?}");
    assert_eq!(
        storage.latest_replication_key().await.unwrap().unwrap().0,
        2
    );
    reopened.shutdown().await;
}
