//! Account KEKs (`/client/v4/accounts/{id}/kek`): an account's own KEK alone wraps its DEKs;
//! removing it makes that account unavailable and nothing else; deleting the account destroys
//! it, so a copy of the data dir taken before the delete opens nothing of the account with
//! any key the running instance still holds.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use coffer_api::ErrorCode;
use coffer_crypto::{
    CryptoError, DataKey, DekContext, FileKek, KekId, KekProvider, SealedValue, ValueContext,
    WrappedDataKey,
};
use coffer_types::{AccountId, DekId, SecretId, StoreId, Version};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::support::*;

const POLLS: usize = 3000;

fn kek_uri(account: &str) -> String {
    format!("{V4}/{account}/kek")
}

pub(super) fn fast_keys() -> coffer_server::KeyOptions {
    coffer_server::KeyOptions {
        // One DEK per value, so every account has many DEKs to move and to shred.
        dek_policy: coffer_server::DekPolicy {
            max_seals: 1,
            ..coffer_server::DekPolicy::default()
        },
        reseal: Default::default(),
        rewrap: coffer_server::RewrapSettings {
            batch: 4,
            pause: Duration::from_millis(2),
            grace: Duration::from_millis(50),
            retry: Duration::from_millis(50),
        },
    }
}

pub(super) async fn set_kek(h: &Harness, account: &str, kek: &str) -> Resp {
    h.json_abs(Method::PUT, &kek_uri(account), &json!({ "kek": kek }))
        .await
}

/// Polls the account's KEK status until no DEK is left to move; panics on a failed rewrap.
pub(super) async fn wait_moved(h: &Harness, account: &str) -> Value {
    for _ in 0..POLLS {
        let s = assert_ok(
            &h.send_as(Method::GET, &kek_uri(account), Some(&h.bearer()), None)
                .await,
        );
        assert_ne!(s["rewrap"], "failed", "{s}");
        let deks = s["deks"].as_array().unwrap();
        if s["rewrap"] == "done" && deks.len() == 1 && deks[0]["kek_id"] == s["kek_id"] {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the account's DEKs were not moved onto its KEK");
}

/// Creates `n` secrets in `store` of `account` through `admin` (a token of that account).
pub(super) async fn put_secrets(
    h: &Harness,
    account: &str,
    admin: &IssuedToken,
    store: &str,
    tag: &str,
    n: usize,
) {
    let items: Vec<Value> = (0..n)
        .map(|i| {
            secret_item(
                &format!("{tag}{i}"),
                &format!("value-{tag}-{i}"),
                &["workers"],
            )
        })
        .collect();
    let r = h
        .send_as(
            Method::POST,
            &format!("{V4}/{account}/secrets_store/stores/{store}/secrets"),
            Some(&admin.bearer()),
            Some(&json!(items)),
        )
        .await;
    assert_ok(&r);
}

/// Every file under `dir`, recursively, with its path relative to `dir` and its bytes.
pub(super) fn copy_tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.is_file() {
                let rel = path.strip_prefix(root).unwrap().to_owned();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

pub(super) fn restore(files: &[(PathBuf, Vec<u8>)], root: &Path) {
    for (rel, bytes) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

pub(super) struct CopiedDek {
    id: DekId,
    kek_id: String,
    wrapped: Vec<u8>,
}

pub(super) struct CopiedValue {
    pub(super) store: StoreId,
    pub(super) secret: SecretId,
    pub(super) version: u32,
    pub(super) dek: DekId,
    pub(super) sealed: Vec<u8>,
}

pub(super) fn id16(bytes: Vec<u8>) -> [u8; 16] {
    bytes.try_into().unwrap()
}

/// The deleted account's wrapped DEKs and sealed values, read from the copied database.
pub(super) fn copied_rows(db: &Path, account: AccountId) -> (Vec<CopiedDek>, Vec<CopiedValue>) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, kek_id, wrapped FROM deks WHERE account_id = ?1")
        .unwrap();
    let deks = stmt
        .query_map([account.as_bytes().to_vec()], |row| {
            Ok(CopiedDek {
                id: DekId::from_bytes(id16(row.get(0)?)),
                kek_id: row.get(1)?,
                wrapped: row.get(2)?,
            })
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT s.store_id, v.secret_id, v.version, v.dek_id, v.sealed
             FROM versions v JOIN secrets s ON s.id = v.secret_id WHERE s.account_id = ?1",
        )
        .unwrap();
    let values = stmt
        .query_map([account.as_bytes().to_vec()], |row| {
            Ok(CopiedValue {
                store: StoreId::from_bytes(id16(row.get(0)?)),
                secret: SecretId::from_bytes(id16(row.get(1)?)),
                version: row.get(2)?,
                dek: DekId::from_bytes(id16(row.get(3)?)),
                sealed: row.get(4)?,
            })
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (deks, values)
}

pub(super) fn dek_ctx(account: AccountId, dek: DekId) -> DekContext<'static> {
    DekContext {
        account: Some(account),
        dek,
        purpose: "dek",
    }
}

/// Tries `kek` on a copied wrapped DEK, naming the wrap as `kek`'s own so that the KEK id check
/// does not answer first: only the AEAD decides.
fn try_unwrap(kek: &FileKek, account: AccountId, dek: &CopiedDek) -> Result<DataKey, CryptoError> {
    let wrapped = WrappedDataKey {
        kek_id: kek.current_kek_id(),
        bytes: dek.wrapped.clone(),
    };
    kek.unwrap(&wrapped, &dek_ctx(account, dek.id))
}

pub(super) fn open_value(key: &DataKey, account: AccountId, v: &CopiedValue) -> Option<Vec<u8>> {
    let ctx = ValueContext {
        account,
        store: v.store,
        secret: v.secret,
        version: Version(v.version),
        dek: v.dek,
    };
    coffer_crypto::open(key, &ctx, &SealedValue(v.sealed.clone()))
        .ok()
        .map(|p| p.expose_secret().to_vec())
}

#[tokio::test]
async fn deleting_an_account_with_its_own_kek_leaves_a_prior_copy_that_nothing_held_opens() {
    if SqliteOnly::KeyRotation.skip() {
        return;
    }
    let h = Harness::with_keys(fast_keys()).await;
    // The doomed account: values written before and after it gets its KEK.
    let (doomed, admin, store) = h.other_account_with_secret("before-kek").await;
    put_secrets(&h, &doomed, &admin, &store, "early", 5).await;
    let set = assert_ok(&set_kek(&h, &doomed, "file").await);
    assert_eq!(set["wrapped_by"], "account", "{set}");
    assert_eq!(set["provider"], "file", "{set}");
    let doomed_kek_id = set["kek_id"].as_str().unwrap().to_owned();
    let key_file = h.data_dir.join(format!("account-keks/{doomed}.key"));
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    put_secrets(&h, &doomed, &admin, &store, "late", 5).await;
    let moved = wait_moved(&h, &doomed).await;
    assert_eq!(moved["deks"][0]["deks"], 11, "{moved}");

    // A surviving account with its own KEK, and the operator's account under the instance KEK.
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
    put_secrets(&h, &kept, &kept_admin, &kept_store, "k", 3).await;
    let own_store = h.create_store("own").await;
    h.create_secret(&own_store, "own", "own-value").await;

    // Every file of the data dir, before the delete.
    let before = copy_tree(&h.data_dir);
    assert!(
        before
            .iter()
            .any(|(p, _)| p.ends_with(format!("{doomed}.key")))
    );

    let r = h
        .raw_abs(
            Method::DELETE,
            &format!("{V4}/{doomed}"),
            None,
            Body::empty(),
        )
        .await;
    assert_deleted(&r);
    assert!(!key_file.exists(), "the account's key file is unlinked");
    assert!(
        !h.data_dir
            .join(format!("account-keks/{doomed}.toml"))
            .exists()
    );
    assert!(h.data_dir.join(format!("account-keks/{kept}.key")).exists());

    // The copy, laid out in a directory of its own.
    let copy = tempfile::tempdir().unwrap();
    restore(&before, copy.path());
    let account: AccountId = doomed.parse().unwrap();
    let (deks, values) = copied_rows(&copy.path().join("coffer.db"), account);
    assert_eq!(deks.len(), 11, "one DEK per value in the copy");
    assert_eq!(values.len(), 11);
    assert!(
        deks.iter().all(|d| d.kek_id == doomed_kek_id),
        "every DEK in the copy is wrapped by the account's KEK alone"
    );

    // Positive control: the copied account key opens the copy (so the checks below can fail).
    let copied_key =
        FileKek::open(&copy.path().join(format!("account-keks/{doomed}.key"))).unwrap();
    let mut opened = 0;
    for v in &values {
        let dek = deks.iter().find(|d| d.id == v.dek).unwrap();
        let key = try_unwrap(&copied_key, account, dek).expect("the copied key unwraps");
        assert!(open_value(&key, account, v).is_some());
        opened += 1;
    }
    assert_eq!(opened, 11);

    // Every key file the running instance still holds: the instance KEK (every version) and
    // the remaining account KEKs. This covers the KEK wraps (`deks.wrapped`); the replication-key
    // wraps of the same DEKs (`deks.rk_wrapped`, for edges) are not shredded, and the instance KEK
    // still reaches them through the RK versions: docs/key-hierarchy.md, "Shredding an account".
    let mut held = Vec::new();
    for entry in std::fs::read_dir(&h.data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "key") {
            held.push(FileKek::open(&path).unwrap());
        }
    }
    for entry in std::fs::read_dir(h.data_dir.join("account-keks")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "key") {
            held.push(FileKek::open(&path).unwrap());
        }
    }
    assert!(held.len() >= 2, "the instance KEK and the kept account's");
    let held_ids: Vec<KekId> = held.iter().map(|k| k.current_kek_id()).collect();
    assert!(!held_ids.contains(&KekId(doomed_kek_id.clone())));
    for kek in &held {
        for dek in &deks {
            match try_unwrap(kek, account, dek) {
                Err(CryptoError::Opaque) => {}
                Ok(_) => panic!(
                    "{} unwraps a DEK of the deleted account",
                    kek.current_kek_id()
                ),
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
    }
    // And the running instance itself no longer opens anything of the account.
    let r = h
        .send_as(Method::GET, &kek_uri(&doomed), Some(&h.bearer()), None)
        .await;
    assert_err(&r, ErrorCode::AccountNotFound, "");

    // The other accounts are untouched.
    let kept_status = wait_moved(&h, &kept).await;
    assert_eq!(kept_status["deks"][0]["deks"], 3, "{kept_status}");
    h.create_secret(&own_store, "own2", "v").await;
}

async fn read(app: &axum::Router, token: &str, binding: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(Method::GET)
        .uri(format!("/runtime/v1/bindings/{binding}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    let body = serde_json::from_slice(&body)
        .unwrap_or(Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, body)
}

#[tokio::test]
async fn a_removed_account_key_makes_that_account_unavailable_and_nothing_else() {
    if SqliteOnly::KeyRotation.skip() {
        return;
    }
    let h = Harness::with_keys(fast_keys()).await;
    let store = h.create_store("s").await;
    h.create_secret(&store, "a", "value-a").await;
    let svc = h
        .deploy_ok(&deploy_body("app", &[("A", &store, "a")]))
        .await;
    let token = svc.token().to_owned();
    let (other, other_admin, other_store) = h.other_account_with_secret("other-value").await;

    // The operator's own account gets its own KEK; its DEK moves onto it.
    let set = assert_ok(&set_kek(&h, &h.account, "file").await);
    let kek_id = set["kek_id"].as_str().unwrap().to_owned();
    wait_moved(&h, &h.account).await;
    assert_eq!(read(&h.app, &token, "A").await.0, StatusCode::OK);

    // The operator removes the key file; the next start still serves.
    h.coffer.shutdown().await;
    std::fs::remove_file(h.data_dir.join(format!("account-keks/{}.key", h.account))).unwrap();
    let reopened = Arc::new(
        coffer_server::open_data_dir_tuned(
            &h.data_dir,
            Default::default(),
            Default::default(),
            fast_keys(),
        )
        .await
        .expect("a missing account key does not stop the server")
        .coffer,
    );
    let app = coffer_server::app(reopened.clone());
    let send = |method: Method, uri: String, token: String, body: Option<Value>| {
        let app = app.clone();
        async move {
            let mut req = Request::builder()
                .method(method)
                .uri(uri)
                .header(header::AUTHORIZATION, format!("Bearer {token}"));
            let body = match body {
                Some(b) => {
                    req = req.header(header::CONTENT_TYPE, "application/json");
                    Body::from(b.to_string())
                }
                None => Body::empty(),
            };
            let res = app.oneshot(req.body(body).unwrap()).await.unwrap();
            let status = res.status();
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };

    // The account's values: 503 account_kek_unavailable, naming the account key.
    let (status, body) = read(&app, &token, "A").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["errors"][0]["code"], 1503, "{body}");
    let (status, body) = send(
        Method::POST,
        format!("{V4}/{}/secrets_store/stores/{store}/secrets", h.account),
        h.token.clone(),
        Some(json!([secret_item("b", "value-b", &["workers"])])),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["errors"][0]["code"], 1503, "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(&kek_id) && message.contains(&h.account),
        "{message}"
    );
    let (status, body) = send(Method::GET, kek_uri(&h.account), h.token.clone(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"]["state"], "unavailable", "{body}");

    // Everything else serves: the other account writes, lists, and the operator administers.
    let (status, body) = send(
        Method::POST,
        format!("{V4}/{other}/secrets_store/stores/{other_store}/secrets"),
        other_admin
            .bearer()
            .trim_start_matches("Bearer ")
            .to_owned(),
        Some(json!([secret_item("two", "v2", &["workers"])])),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send(Method::GET, format!("{V4}/{other}"), h.token.clone(), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    reopened.shutdown().await;
}

#[tokio::test]
async fn an_account_record_naming_a_key_that_is_not_the_accounts_own_is_refused_at_start() {
    if SqliteOnly::KeyRotation.skip() {
        return;
    }
    let h = Harness::with_keys(fast_keys()).await;
    let store = h.create_store("s").await;
    h.create_secret(&store, "a", "value-a").await;
    let (other, _, _) = h.other_account_with_secret("other-value").await;
    let third = h.create_account("third").await;
    assert_ok(&set_kek(&h, &h.account, "file").await);
    wait_moved(&h, &h.account).await;
    h.coffer.shutdown().await;

    // Records `set-kek` would refuse, written into the data dir: `other` names the operator
    // account's key, `third` the instance KEK's own key file.
    let dir = h.data_dir.join("account-keks");
    let own = std::fs::read_to_string(dir.join(format!("{}.toml", h.account))).unwrap();
    std::fs::write(dir.join(format!("{other}.toml")), &own).unwrap();
    let instance = FileKek::open(&h.data_dir.join("kek.key")).unwrap();
    std::fs::write(
        dir.join(format!("{third}.toml")),
        format!(
            "provider = \"file\"\npath = {:?}\nkek_id = \"{}\"\n",
            h.data_dir.join("kek.key").display().to_string(),
            instance.current_kek_id()
        ),
    )
    .unwrap();

    let reopened = Arc::new(
        coffer_server::open_data_dir_tuned(
            &h.data_dir,
            Default::default(),
            Default::default(),
            fast_keys(),
        )
        .await
        .expect("a refused record does not stop the server")
        .coffer,
    );
    let app = coffer_server::app(reopened.clone());
    let status = |account: String| {
        let app = app.clone();
        let token = h.token.clone();
        async move {
            let req = Request::builder()
                .method(Method::GET)
                .uri(kek_uri(&account))
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap();
            let res = app.oneshot(req).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<Value>(&bytes).unwrap()["result"].clone()
        }
    };
    for account in [other.clone(), h.account.clone()] {
        let s = status(account.clone()).await;
        assert_eq!(s["state"], "unavailable", "{account}: {s}");
    }
    let s = status(third.clone()).await;
    assert_eq!(s["state"], "unavailable", "{s}");
    // Nothing of the refused records' keys moved anywhere: the key file is still there.
    assert!(dir.join(format!("{}.key", h.account)).exists());
    reopened.shutdown().await;
}

#[tokio::test]
async fn bad_account_kek_requests_are_refused_clearly_and_change_nothing() {
    if SqliteOnly::KeyRotation.skip() {
        return;
    }
    let h = Harness::new().await;
    let b = h.create_account("b").await;
    let uri = kek_uri(&b);

    for (body, needle) in [
        (json!({ "kek": "nope" }), "expected `file`"),
        (json!({ "kek": "file:relative.key" }), "absolute path"),
        // A file instance KEK: no PKCS#11 token for an account key to share.
        (
            json!({ "kek": "pkcs11:token=t;object=o" }),
            "instance's KEK is a key file",
        ),
        (json!({ "kek": "pkcs11" }), "instance's KEK is a key file"),
        (
            json!({ "kek": "file:/nonexistent/coffer/key" }),
            "/nonexistent/coffer/key",
        ),
    ] {
        let r = h.json_abs(Method::PUT, &uri, &body).await;
        let e = assert_err_at(&r, ErrorCode::InvalidField, "/kek");
        assert!(
            e["message"].as_str().unwrap().contains(needle),
            "{body}: {e}"
        );
    }
    // A key file others may read, one of the wrong length, the instance's own KEK.
    let dir = tempfile::tempdir().unwrap();
    let loose = dir.path().join("loose.key");
    std::fs::write(&loose, [7u8; 32]).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let short = dir.path().join("short.key");
    std::fs::write(&short, [7u8; 16]).unwrap();
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
    let instance = h.data_dir.join("kek.key");
    let copied_instance = dir.path().join("instance-copy.key");
    std::fs::copy(&instance, &copied_instance).unwrap();
    std::fs::set_permissions(&copied_instance, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The instance's key reached through `..` and through a symlink.
    let dotted = h.data_dir.join("..").join("data").join("kek.key");
    let link = dir.path().join("link.key");
    std::os::unix::fs::symlink(&instance, &link).unwrap();
    for path in [&loose, &short, &instance, &copied_instance, &dotted, &link] {
        let r = set_kek(&h, &b, &format!("file:{}", path.display())).await;
        assert_err_at(&r, ErrorCode::InvalidField, "/kek");
    }
    let r = h
        .json_abs(Method::PUT, &uri, &json!({ "kek": "file", "pin": "1234" }))
        .await;
    assert_err(&r, ErrorCode::InvalidField, "pin");
    let r = set_kek(&h, &random_id(), "file").await;
    assert_err(&r, ErrorCode::AccountNotFound, "");
    assert!(
        !h.data_dir.join("account-keks").exists()
            || copy_tree(&h.data_dir.join("account-keks")).is_empty()
    );

    // Not the operator: refused.
    let admin = h.issue_token(&b, "b-admin", "super_admin").await;
    let r = h
        .send_as(
            Method::PUT,
            &uri,
            Some(&admin.bearer()),
            Some(&json!({ "kek": "file" })),
        )
        .await;
    assert_err(&r, ErrorCode::Forbidden, "instance:operator");
    let r = h
        .send_as(Method::GET, &uri, Some(&admin.bearer()), None)
        .await;
    assert_err(&r, ErrorCode::Forbidden, "instance:operator");

    // An existing key file outside the data dir is taken; a second KEK is refused.
    let own = dir.path().join("own.key");
    FileKek::create(&own).unwrap();
    let s = assert_ok(&set_kek(&h, &b, &format!("file:{}", own.display())).await);
    assert_eq!(s["location"], own.display().to_string(), "{s}");
    let r = set_kek(&h, &b, "file").await;
    let e = assert_err(&r, ErrorCode::AccountKekExists, "already has its own KEK");
    assert_eq!(e["code"], 1312);
    // The same key file for another account is refused (deleting one would shred both).
    let c = h.create_account("c").await;
    let r = set_kek(&h, &c, &format!("file:{}", own.display())).await;
    assert_err(&r, ErrorCode::InvalidField, "account");

    // Audited in the account and in the operator's, with the key's public id only.
    let (entries, raw) = h.audit_entries_all(&b).await;
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "set_kek" && e["outcome"] == "success")
    );
    let key_bytes = std::fs::read(&own).unwrap();
    assert!(!contains(&raw, &key_bytes));

    // Deleting the account leaves a key file the operator named where it is (the API never
    // deletes a file Coffer did not make), and forgets the record.
    let r = h
        .raw_abs(Method::DELETE, &format!("{V4}/{b}"), None, Body::empty())
        .await;
    assert_deleted(&r);
    assert!(own.exists(), "the operator's key file is not unlinked");
    assert!(!h.data_dir.join(format!("account-keks/{b}.toml")).exists());
}

#[tokio::test]
async fn a_dek_that_does_not_unwrap_stops_the_move_and_is_refused_safely() {
    if SqliteOnly::KeyRotation.skip() {
        return;
    }
    let h = Harness::with_keys(fast_keys()).await;
    let store = h.create_store("s").await;
    for name in ["a", "b", "c"] {
        h.create_secret(&store, name, &format!("value-{name}"))
            .await;
    }
    let svc = h
        .deploy_ok(&deploy_body(
            "app",
            &[("A", &store, "a"), ("B", &store, "b"), ("C", &store, "c")],
        ))
        .await;
    let token = svc.token().to_owned();

    // Damage the wrapped form of b's DEK in the database, before the account gets its KEK.
    let account: AccountId = h.account.parse().unwrap();
    let conn = rusqlite::Connection::open(h.data_dir.join("coffer.db")).unwrap();
    let b_dek: Vec<u8> = conn
        .query_row(
            "SELECT v.dek_id FROM versions v JOIN secrets s ON s.id = v.secret_id WHERE s.name = 'b'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let changed = conn
        .execute(
            "UPDATE deks SET wrapped = zeroblob(length(wrapped)) WHERE id = ?1 AND account_id = ?2",
            rusqlite::params![b_dek, account.as_bytes().to_vec()],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);

    assert_ok(&set_kek(&h, &h.account, "file").await);
    // The move stops on that DEK, naming it; the others are moved.
    let dek_hex = hex::encode(&b_dek);
    let mut status = Value::Null;
    for _ in 0..POLLS {
        status = assert_ok(
            &h.send_as(Method::GET, &kek_uri(&h.account), Some(&h.bearer()), None)
                .await,
        );
        if status["rewrap"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status["rewrap"], "failed", "{status}");
    let error = status["error"].as_str().unwrap();
    assert!(
        error.contains(&dek_hex) && error.contains("does not unwrap"),
        "{error}"
    );

    // A fresh process (no DEK in memory): the server starts, b is refused with a 503 in the
    // envelope (never a 500 or a panic), a and c read.
    h.coffer.shutdown().await;
    let reopened = Arc::new(
        coffer_server::open_data_dir_tuned(
            &h.data_dir,
            Default::default(),
            Default::default(),
            fast_keys(),
        )
        .await
        .expect("a damaged DEK does not stop the server")
        .coffer,
    );
    let app = coffer_server::app(reopened.clone());
    let (status, body) = read(&app, &token, "B").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["success"], false, "{body}");
    for (binding, value) in [("A", "value-a"), ("C", "value-c")] {
        let (status, body) = read(&app, &token, binding).await;
        assert_eq!(status, StatusCode::OK, "{binding}: {body}");
        assert_eq!(body, Value::String(value.to_owned()), "{binding}");
    }
    reopened.shutdown().await;
}
