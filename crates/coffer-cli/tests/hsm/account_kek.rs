//! Account KEKs in the instance KEK's PKCS#11 token (`coffer account set-kek --kek pkcs11`,
//! `--kek pkcs11:URI`) against SoftHSM2: the account's DEKs wrapped by its key object alone,
//! inside the token; the object's value never readable; its loss failing that account alone;
//! deleting the account destroying an object Coffer made (and leaving one the operator named),
//! so that a copy of the data dir taken before the delete opens nothing with any key left.

use coffer_crypto::{
    CryptoError, DataKey, DekContext, KekId, KekProvider, SealedValue, ValueContext, WrappedDataKey,
};
use coffer_hsm::testing::{TestKey, in_own_process};
use coffer_hsm::{KeyObject, Pin, Pkcs11Config, Pkcs11Kek, Pkcs11Uri};
use coffer_types::{AccountId, DekId, SecretId, StoreId, Version};
use std::sync::Arc;

use zeroize::Zeroizing;

use super::rotation::{copy_dir, delete_object, start_server_with, token_labels};
use super::*;

/// One DEK per value, and a short grace, so that the move onto the account key ends quickly.
const ARGS: [&str; 4] = ["--dek-max-seals", "1", "--kek-retire-grace", "1"];
const POLLS: usize = 1200;

fn kek_status(op: &Conn, account: &str) -> Value {
    op.run(&["account", "kek", account, "--json"]).ok().json()
}

/// Polls until every DEK of `account` is wrapped by its own KEK.
fn wait_moved(op: &Conn, account: &str) -> Value {
    for _ in 0..POLLS {
        let s = kek_status(op, account);
        assert_ne!(s["rewrap"], "failed", "{s}");
        let deks = s["deks"].as_array().unwrap();
        if s["rewrap"] == "done" && deks.len() == 1 && deks[0]["kek_id"] == s["kek_id"] {
            return s;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the DEKs of {account} were not moved onto its KEK");
}

/// Waits until the DEK lifecycle job has re-sealed every value under a retired DEK (set-kek
/// retires the account's DEKs under the instance replication key) and finished its pass, so
/// the retired DEKs are destroyed too: a restart before that would race the job's next pass
/// (at start) against what the test does next.
fn wait_resealed(op: &Conn) {
    for _ in 0..POLLS {
        let s = op.run(&["kek", "status", "--json"]).ok().json();
        let reseal = &s["reseal"];
        assert!(reseal.is_object(), "{s}");
        if reseal["remaining"] == 0 && reseal["running"] == false {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the values under the account's retired DEKs were not re-sealed");
}

/// pkcs11-tool on the test token, logged in: (success, stdout + stderr).
fn pkcs11_tool(hsm: &SoftHsm, token: &str, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("pkcs11-tool");
    hsm.configure(&mut cmd);
    cmd.args(["--module", hsm.module().to_str().unwrap()])
        .args(["--token-label", token, "--login", "--pin", USER_PIN])
        .args(args);
    let out = cmd.output().expect("run pkcs11-tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// pkcs11-tool's listing of the secret key labelled `label`.
fn listing(hsm: &SoftHsm, label: &str) -> String {
    let (ok, text) = pkcs11_tool(hsm, TOKEN, &["--list-objects", "--type", "secrkey"]);
    assert!(ok, "{text}");
    let mut blocks: Vec<String> = Vec::new();
    for line in text.lines() {
        match blocks.last_mut() {
            Some(last) if line.starts_with(' ') => {
                last.push_str(line);
                last.push('\n');
            }
            _ => blocks.push(format!("{line}\n")),
        }
    }
    blocks
        .into_iter()
        .find(|b| {
            b.lines()
                .any(|l| l.trim().strip_prefix("label:").map(str::trim) == Some(label))
        })
        .unwrap_or_else(|| panic!("no key labelled {label} in:\n{text}"))
}

/// An AES key the operator makes in `token` with pkcs11-tool (private, sensitive, never
/// extractable, with a CKA_ID).
fn operator_key(hsm: &SoftHsm, token: &str, kind: &str, label: &str) {
    operator_key_with(hsm, token, kind, label, &["--private", "--id", "c0ffee"]);
}

fn operator_key_with(hsm: &SoftHsm, token: &str, kind: &str, label: &str, extra: &[&str]) {
    let mut args = vec![
        "--keygen",
        "--key-type",
        kind,
        "--label",
        label,
        "--sensitive",
    ];
    args.extend_from_slice(extra);
    let (ok, text) = pkcs11_tool(hsm, token, &args);
    assert!(ok, "{text}");
}

fn with_url(conn: &Conn, server: &Server) -> Conn {
    Conn {
        url: server.url.clone(),
        token: conn.token.clone(),
        account: conn.account.clone(),
    }
}

#[test]
fn a_pkcs11_account_kek_alone_wraps_the_accounts_deks_and_its_loss_fails_that_account_only() {
    let Some(hsm) = SoftHsm::new(
        "a_pkcs11_account_kek_alone_wraps_the_accounts_deks_and_its_loss_fails_that_account_only",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (account, token) = init_hsm(&hsm, &data);
    let server = start_server_with(&hsm, &data, &ARGS);
    let op = Conn {
        url: server.url.clone(),
        token,
        account,
    };
    let b = account_admin(&op, "team-b");
    let svc_a = bound_secret(&op, tmp.path(), "svc-a", VALUE_A);
    // Sealed before the account has a key of its own: its DEK is moved afterwards.
    let svc_b = bound_secret(&b, tmp.path(), "svc-b", VALUE_B);

    let set = op
        .run(&["account", "set-kek", "team-b", "--kek", "pkcs11", "--json"])
        .ok()
        .json();
    assert_eq!(set["wrapped_by"], "account", "{set}");
    assert_eq!(set["provider"], "pkcs11", "{set}");
    let kek_id = set["kek_id"].as_str().unwrap().to_owned();
    assert!(kek_id.starts_with("pkcs11:"), "{set}");
    let label = format!("{OBJECT}.account.{}", b.account);
    let location = set["location"].as_str().unwrap();
    assert!(
        location.contains(&format!("token={TOKEN};object={label};id=%")),
        "{set}"
    );
    // The record names the object, says Coffer made it, and holds no PIN.
    let record =
        std::fs::read_to_string(data.join(format!("account-keks/{}.toml", b.account))).unwrap();
    assert!(record.contains("provider = \"pkcs11\""), "{record}");
    assert!(record.contains("made_by_coffer = true"), "{record}");
    assert!(record.contains(&kek_id), "{record}");
    assert!(!record.contains(USER_PIN), "{record}");
    // In the token: an AES-256 key that is sensitive and was never extractable; the token
    // refuses to reveal its value (CKA_VALUE).
    let listed = listing(&hsm, &label);
    assert!(listed.contains("AES length 32"), "{listed}");
    assert!(
        listed.contains("sensitive") && listed.contains("never extractable"),
        "{listed}"
    );
    let (ok, text) = pkcs11_tool(
        &hsm,
        TOKEN,
        &["--read-object", "--type", "secrkey", "--label", &label],
    );
    assert!(!ok && text.contains("CKA_VALUE"), "{text}");

    // Written after: a DEK made under the account key; and the older DEK moved onto it.
    let svc_b2 = bound_secret(&b, tmp.path(), "svc-b2", "b-after-the-kek");
    let moved = wait_moved(&op, "team-b");
    assert_eq!(moved["deks"][0]["kek_id"], kek_id.as_str(), "{moved}");
    assert!(moved["deks"][0]["deks"].as_u64().unwrap() >= 2, "{moved}");
    assert_eq!(moved["state"], "available", "{moved}");
    let out = op.run(&["account", "kek", "team-b"]).ok();
    assert!(
        out.stdout.contains("has its own KEK") && out.stdout.contains("pkcs11"),
        "{out:#?}"
    );
    // The operator's account stays under the instance KEK.
    let own = kek_status(&op, &op.account);
    assert_eq!(own["wrapped_by"], "instance", "{own}");
    assert_ne!(own["kek_id"], kek_id.as_str(), "{own}");
    assert_eq!(read_binding(&server, &svc_b), (200, VALUE_B.to_owned()));
    wait_resealed(&op);
    drop(server);

    // After a restart nothing is cached: the DEKs are unwrapped by the object in the token.
    let server = start_server_with(&hsm, &data, &ARGS);
    assert_eq!(read_binding(&server, &svc_b), (200, VALUE_B.to_owned()));
    assert_eq!(
        read_binding(&server, &svc_b2),
        (200, "b-after-the-kek".to_owned())
    );
    assert_eq!(read_binding(&server, &svc_a), (200, VALUE_A.to_owned()));
    drop(server);

    // The object is destroyed behind a running server's back: the account's next unwrap fails
    // (503), and the token's session pool stays up: the instance KEK unwraps another account's
    // DEK afresh.
    let server = start_server_with(&hsm, &data, &ARGS);
    delete_object(&hsm, &label);
    assert!(!token_labels(&hsm).contains(&label));
    let (status, body) = read_binding(&server, &svc_b);
    assert_eq!(status, 503, "{body}");
    assert!(
        !body.contains(USER_PIN) && !body.contains(VALUE_B),
        "{body}"
    );
    assert_eq!(read_binding(&server, &svc_a), (200, VALUE_A.to_owned()));
    let log = server.log_with("gone from the token");
    assert!(!log.contains("the PKCS#11 token is unavailable"), "{log}");
    drop(server);

    // A start without the object: the server still starts; that account alone answers 503
    // account_kek_unavailable.
    let server = start_server_with(&hsm, &data, &ARGS);
    let op = with_url(&op, &server);
    let b = with_url(&b, &server);
    assert_eq!(read_binding(&server, &svc_a), (200, VALUE_A.to_owned()));
    let (status, body) = read_binding(&server, &svc_b);
    assert_eq!(status, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["errors"][0]["code"], 1503, "{v}");
    assert!(
        !body.contains(USER_PIN) && !body.contains(VALUE_B),
        "{body}"
    );
    // A write needing a new DEK of the account is refused the same way, in one line.
    let store_b = create_store(&b, "b-late");
    let out = b.run_with_stdin(
        &[
            "secret", "create", &store_b, "--name", "k", "--scopes", "workers",
        ],
        "v",
    );
    let line = out.one_error_line(1);
    assert!(line.contains("1503"), "{line}");
    let s = kek_status(&op, "team-b");
    assert_eq!(s["state"], "unavailable", "{s}");
    assert!(s["error"].as_str().unwrap().contains(&label), "{s}");
    // Every other account serves, writes included.
    bound_secret(&op, tmp.path(), "svc-a2", "a-after-the-loss");
    assert!(
        server
            .log()
            .contains("the account's own KEK is unavailable"),
        "{}",
        server.log()
    );
}

#[test]
fn bad_pkcs11_account_keks_are_refused_in_one_line_and_an_operators_object_is_kept() {
    let Some(hsm) = SoftHsm::new(
        "bad_pkcs11_account_keks_are_refused_in_one_line_and_an_operators_object_is_kept",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (account, token) = init_hsm(&hsm, &data);
    // pkcs11-tool cannot clear CKA_WRAP (SoftHSM's default), which an account's key may not
    // have: made through the module in a child process.
    hsm.create_key(
        TOKEN,
        &TestKey::account("team-c-kek", &[0xc0, 0xff, 0xee], [7; 32]),
        "account_kek::make_test_key",
    );
    operator_key(&hsm, TOKEN, "AES:32", "wrapping-kek");
    operator_key(&hsm, TOKEN, "AES:16", "short-kek");
    operator_key(&hsm, TOKEN, "GENERIC:32", "generic-kek");
    // pkcs11-tool makes an object public unless told --private.
    operator_key_with(&hsm, TOKEN, "AES:32", "public-kek", &["--id", "c1"]);
    operator_key_with(&hsm, TOKEN, "AES:32", "no-id-kek", &["--private"]);
    // Under labels Coffer gives its own objects in the token.
    operator_key(&hsm, TOKEN, "AES:32", "coffer-kek.v7");
    operator_key(
        &hsm,
        TOKEN,
        "AES:32",
        "coffer-kek.account.0123456789abcdef0123456789abcdef",
    );
    hsm.init_token("other");
    operator_key(&hsm, "other", "AES:32", "elsewhere");
    let server = start_server_with(&hsm, &data, &ARGS);
    let op = Conn {
        url: server.url.clone(),
        token,
        account,
    };
    let c = account_admin(&op, "team-c");
    let before = token_labels(&hsm);

    for (kek, needle) in [
        (
            "pkcs11:token=other;object=elsewhere",
            "not the instance KEK's",
        ),
        (
            "pkcs11:token=coffer;object=nope",
            "no object labelled \"nope\"",
        ),
        ("pkcs11:token=coffer;object=short-kek", "16 bytes long"),
        ("pkcs11:token=coffer;object=generic-kek", "not AES"),
        (
            "pkcs11:token=coffer;object=coffer-kek",
            "the instance KEK's first version",
        ),
        (
            "pkcs11:token=coffer;object=team-c-kek?module-path=/nonexistent/p11.so",
            "/nonexistent/p11.so",
        ),
        ("pkcs11:object=team-c-kek", "names no token"),
        ("pkcs11:token=coffer;object=public-kek", "is not private"),
        ("pkcs11:token=coffer;object=no-id-kek", "has no CKA_ID"),
        (
            "pkcs11:token=coffer;object=wrapping-kek",
            "may wrap other keys",
        ),
        (
            "pkcs11:token=coffer;object=coffer-kek.v7",
            "a version of the instance KEK",
        ),
        (
            "pkcs11:token=coffer;object=coffer-kek.account.0123456789abcdef0123456789abcdef",
            "an account's generated key",
        ),
    ] {
        let out = op.run(&["account", "set-kek", "team-c", "--kek", kek]);
        let line = out.one_error_line(1);
        assert!(line.contains("[1002 invalid_field]"), "{kek}: {line}");
        assert!(line.contains(needle), "{kek}: {line}");
        assert!(!line.contains(USER_PIN), "{line}");
    }
    assert!(
        !data
            .join(format!("account-keks/{}.toml", c.account))
            .exists()
    );
    assert_eq!(token_labels(&hsm), before, "a refusal makes nothing");
    assert_eq!(kek_status(&op, "team-c")["wrapped_by"], "instance");

    // The operator's own object (module-path left out: the instance's is meant).
    let svc_c = bound_secret(&c, tmp.path(), "svc-c", "c-value");
    let set = op
        .run(&[
            "account",
            "set-kek",
            "team-c",
            "--kek",
            "pkcs11:token=coffer;object=team-c-kek",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(set["provider"], "pkcs11", "{set}");
    let record =
        std::fs::read_to_string(data.join(format!("account-keks/{}.toml", c.account))).unwrap();
    assert!(record.contains("made_by_coffer = false"), "{record}");
    assert!(
        record.contains("object=team-c-kek;id=%C0%FF%EE"),
        "{record}"
    );
    let moved = wait_moved(&op, "team-c");
    assert_eq!(moved["deks"][0]["kek_id"], set["kek_id"], "{moved}");
    assert_eq!(read_binding(&server, &svc_c), (200, "c-value".to_owned()));
    // Another account may not take the same object.
    let d = account_admin(&op, "team-d");
    let out = op.run(&[
        "account",
        "set-kek",
        "team-d",
        "--kek",
        "pkcs11:token=coffer;object=team-c-kek",
    ]);
    let line = out.one_error_line(1);
    assert!(line.contains("already uses"), "{line}");
    assert!(
        !data
            .join(format!("account-keks/{}.toml", d.account))
            .exists()
    );

    // Deleting the account leaves the operator's object in the token, and says so.
    op.run(&["account", "delete", "team-c"]).ok();
    assert!(token_labels(&hsm).contains(&"team-c-kek".to_owned()));
    assert!(
        !data
            .join(format!("account-keks/{}.toml", c.account))
            .exists()
    );
    assert!(
        server.log().contains("left in the token"),
        "{}",
        server.log()
    );
}

// ---- the copy test: what a copy of the data dir taken before the delete still opens ----

struct CopiedDek {
    id: DekId,
    kek_id: String,
    wrapped: Vec<u8>,
}

struct CopiedValue {
    store: StoreId,
    secret: SecretId,
    version: u32,
    dek: DekId,
    sealed: Vec<u8>,
}

fn id16(bytes: Vec<u8>) -> [u8; 16] {
    bytes.try_into().unwrap()
}

/// The account's KEK-wrapped DEKs and sealed values, read from a copied database.
fn copied_rows(db: &Path, account: AccountId) -> (Vec<CopiedDek>, Vec<CopiedValue>) {
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

/// Tries `kek` on a copied wrapped DEK, naming the wrap as `kek`'s own so that the id check
/// does not answer first: only the token's AES-GCM decides.
fn try_unwrap(
    kek: &dyn KekProvider,
    account: AccountId,
    dek: &CopiedDek,
) -> Result<DataKey, CryptoError> {
    let wrapped = WrappedDataKey {
        kek_id: kek.current_kek_id(),
        bytes: dek.wrapped.clone(),
    };
    let ctx = DekContext {
        account: Some(account),
        dek: dek.id,
        purpose: "dek",
    };
    kek.unwrap(&wrapped, &ctx)
}

fn open_value(key: &DataKey, account: AccountId, v: &CopiedValue) -> Option<Vec<u8>> {
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

/// The instance KEK, opened in this process as the server opens it.
fn instance_kek(hsm: &SoftHsm) -> Arc<Pkcs11Kek> {
    let uri = Pkcs11Uri::parse(&hsm.uri()).unwrap();
    let pin = Pin::resolve(&uri, Some(Zeroizing::new(USER_PIN.to_owned()))).unwrap();
    Arc::new(Pkcs11Kek::open(Pkcs11Config::new(uri, pin), None).unwrap())
}

/// The key object an account's record names.
fn recorded_object(data: &Path, account: &str) -> KeyObject {
    let record: toml::Value = toml::from_str(
        &std::fs::read_to_string(data.join(format!("account-keks/{account}.toml"))).unwrap(),
    )
    .unwrap();
    let uri = Pkcs11Uri::parse(record["uri"].as_str().unwrap()).unwrap();
    KeyObject {
        label: uri.object,
        cka_id: uri.id,
        kek_id: KekId(record["kek_id"].as_str().unwrap().to_owned()),
    }
}

#[test]
fn deleting_an_account_destroys_its_token_key_and_a_prior_copy_opens_nothing_with_what_is_left() {
    in_own_process(
        "account_kek::deleting_an_account_destroys_its_token_key_and_a_prior_copy_opens_nothing_with_what_is_left",
        |hsm| {
            let tmp = tempfile::tempdir().unwrap();
            let data = tmp.path().join("data");
            let (account, token) = init_hsm(hsm, &data);
            let server = start_server_with(hsm, &data, &ARGS);
            let op = Conn {
                url: server.url.clone(),
                token,
                account,
            };
            let doomed = account_admin(&op, "doomed");
            let kept = account_admin(&op, "kept");
            for i in 0..3 {
                bound_secret(
                    &doomed,
                    tmp.path(),
                    &format!("early{i}"),
                    &format!("early-{i}"),
                );
            }
            op.run(&["account", "set-kek", "doomed", "--kek", "pkcs11"])
                .ok();
            op.run(&["account", "set-kek", "kept", "--kek", "pkcs11"])
                .ok();
            for i in 0..3 {
                bound_secret(
                    &doomed,
                    tmp.path(),
                    &format!("late{i}"),
                    &format!("late-{i}"),
                );
            }
            let svc_kept = bound_secret(&kept, tmp.path(), "kept", "kept-value");
            let svc_own = bound_secret(&op, tmp.path(), "own", VALUE_A);
            let moved = wait_moved(&op, "doomed");
            let doomed_kek = moved["kek_id"].as_str().unwrap().to_owned();
            assert_eq!(moved["deks"][0]["deks"], 6, "{moved}");
            let doomed_label = format!("{OBJECT}.account.{}", doomed.account);
            let kept_label = format!("{OBJECT}.account.{}", kept.account);
            let doomed_object = recorded_object(&data, &doomed.account);
            drop(server);

            // Every file of the data dir, before the delete.
            let copy = tmp.path().join("copy");
            copy_dir(&data, &copy);
            let account: AccountId = doomed.account.parse().unwrap();
            let (deks, values) = copied_rows(&copy.join("coffer.db"), account);
            assert_eq!((deks.len(), values.len()), (6, 6));
            assert!(
                deks.iter().all(|d| d.kek_id == doomed_kek),
                "every DEK in the copy is wrapped by the account's key alone"
            );

            // Positive control: the account's object opens the copy (so the checks below can
            // fail).
            {
                let kek = instance_kek(hsm);
                kek.load_account_key(&doomed_object).unwrap();
                let key = kek.version(&doomed_object.kek_id).unwrap();
                for v in &values {
                    let dek = deks.iter().find(|d| d.id == v.dek).unwrap();
                    let dek = try_unwrap(&key, account, dek).expect("the account's key unwraps");
                    assert!(open_value(&dek, account, v).is_some());
                }
            }

            let server = start_server_with(hsm, &data, &ARGS);
            let op = with_url(&op, &server);
            op.run(&["account", "delete", "doomed"]).ok();
            let labels = token_labels(hsm);
            assert!(!labels.contains(&doomed_label), "{labels:?}");
            assert!(labels.contains(&kept_label), "{labels:?}");
            assert!(
                !data
                    .join(format!("account-keks/{}.toml", doomed.account))
                    .exists()
            );
            assert!(
                server
                    .log()
                    .contains("destroyed the deleted account's key object"),
                "{}",
                server.log()
            );
            // The others are untouched.
            assert_eq!(
                read_binding(&server, &svc_kept),
                (200, "kept-value".to_owned())
            );
            assert_eq!(read_binding(&server, &svc_own), (200, VALUE_A.to_owned()));
            drop(server);

            // Every key left in the token: the instance KEK and each other secret key object
            // (the kept account's). None opens a copied wrapped DEK; the doomed object is gone.
            let kek = instance_kek(hsm);
            let mut held: Vec<Box<dyn KekProvider>> = Vec::new();
            let labels = token_labels(hsm);
            assert_eq!(labels.len(), 2, "{labels:?}");
            for label in &labels {
                if label == OBJECT {
                    continue;
                }
                let uri = Pkcs11Uri::parse(&hsm.uri_for(TOKEN, label)).unwrap();
                let object = kek.open_account_key(&uri).unwrap();
                held.push(Box::new(kek.version(&object.kek_id).unwrap()));
            }
            let ids: Vec<KekId> = held.iter().map(|k| k.current_kek_id()).collect();
            assert!(!ids.contains(&KekId(doomed_kek.clone())), "{ids:?}");
            for dek in &deks {
                match try_unwrap(&*kek, account, dek) {
                    Err(CryptoError::Opaque) => {}
                    other => panic!("the instance KEK on a copied DEK: {other:?}"),
                }
                for key in &held {
                    match try_unwrap(&**key, account, dek) {
                        Err(CryptoError::Opaque) => {}
                        other => panic!("{} on a copied DEK: {other:?}", key.current_kek_id()),
                    }
                }
            }
            assert!(
                kek.load_account_key(&doomed_object).is_err(),
                "the deleted account's object is gone from the token"
            );
        },
    );
}

/// The child-process helper of `SoftHsm::create_key` (nothing when run as a test).
#[test]
fn make_test_key() {
    coffer_hsm::testing::create_key_in_child();
}
