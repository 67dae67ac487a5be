//! Accounts' own KEKs in the instance KEK's token, against SoftHSM2: generated or taken key
//! objects sharing the instance's pool, an account key that goes missing failing alone (the
//! pool stays up for the instance KEK, at a call and at a reconnect), and the refusals of an
//! operator's URI. Each test runs in its own process (see `softhsm.rs`).

use std::sync::Arc;
use std::time::Duration;

use coffer_crypto::{CryptoError, DataKey, DekContext, KekProvider};
use coffer_hsm::testing::{self, OBJECT, SoftHsm, TestKey, USER_PIN};
use coffer_hsm::{HsmError, Pin, Pkcs11Config, Pkcs11Kek, Pkcs11Uri};
use coffer_types::{AccountId, DekId};
use zeroize::Zeroizing;

fn config(hsm: &SoftHsm) -> Pkcs11Config {
    let uri = Pkcs11Uri::parse(&hsm.uri_for(testing::TOKEN, OBJECT)).unwrap();
    let pin = Pin::resolve(&uri, Some(Zeroizing::new(USER_PIN.to_owned()))).unwrap();
    let mut config = Pkcs11Config::new(uri, pin);
    config.reconnect_backoff = Duration::ZERO;
    config
}

fn ctx() -> DekContext<'static> {
    DekContext {
        account: Some(AccountId::from_bytes([5; 16])),
        dek: DekId::from_bytes([6; 16]),
        purpose: "dek",
    }
}

/// Runs pkcs11-tool on `token`, logged in; panics if it fails.
fn pkcs11_tool(hsm: &SoftHsm, token: &str, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new("pkcs11-tool");
    hsm.configure(&mut cmd);
    let out = cmd
        .args(["--module", hsm.module().to_str().unwrap()])
        .args(["--token-label", token, "--login", "--pin", USER_PIN])
        .args(args)
        .output()
        .expect("run pkcs11-tool");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn round_trip(kek: &dyn KekProvider) -> Result<(), CryptoError> {
    let key = DataKey::generate();
    let wrapped = kek.wrap(&key, &ctx())?;
    assert_eq!(wrapped.kek_id, kek.current_kek_id());
    let back = kek.unwrap(&wrapped, &ctx())?;
    assert_eq!(back.expose_secret(), key.expose_secret());
    Ok(())
}

#[test]
fn an_account_key_that_goes_missing_fails_alone_and_the_pool_stays_up() {
    testing::in_own_process(
        "an_account_key_that_goes_missing_fails_alone_and_the_pool_stays_up",
        |hsm| {
            let (kek, _) = Pkcs11Kek::open_or_generate(config(hsm)).unwrap();
            let kek = Arc::new(kek);
            let one = kek
                .generate_account_key("coffer-kek.account.one", &[1; 16])
                .unwrap();
            let two = kek
                .generate_account_key("coffer-kek.account.two", &[2; 16])
                .unwrap();
            assert_ne!(one.kek_id, two.kek_id);
            assert_ne!(one.kek_id, kek.current_kek_id());
            let acc_one = kek.version(&one.kek_id).unwrap();
            let acc_two = kek.version(&two.kek_id).unwrap();
            round_trip(&acc_one).unwrap();
            round_trip(&acc_two).unwrap();
            // One account's key does not open another's wraps.
            let wrapped = acc_one.wrap(&DataKey::generate(), &ctx()).unwrap();
            let mut as_two = wrapped.clone();
            as_two.kek_id = two.kek_id.clone();
            assert!(matches!(
                acc_two.unwrap(&as_two, &ctx()),
                Err(CryptoError::Opaque)
            ));
            // The instance KEK's own provider does not open an account key's wraps, nor lists
            // the accounts' keys among its versions.
            assert!(kek.unwrap(&wrapped, &ctx()).is_err());
            assert_eq!(kek.objects().len(), 1, "{:?}", kek.objects());
            assert_eq!(kek.account_objects().len(), 2);

            // Account one's object is destroyed behind the pool's back: its calls fail, the
            // key is dropped, and the instance KEK and account two go on, pool unbroken.
            pkcs11_tool(
                hsm,
                testing::TOKEN,
                &[
                    "--delete-object",
                    "--type",
                    "secrkey",
                    "--label",
                    "coffer-kek.account.one",
                ],
            );
            match acc_one.wrap(&DataKey::generate(), &ctx()) {
                Err(CryptoError::KeyUnavailable(m)) => {
                    assert!(m.contains("coffer-kek.account.one"), "{m}")
                }
                other => panic!("{other:?}"),
            }
            assert!(!kek.account_objects().iter().any(|o| o.kek_id == one.kek_id));
            assert!(kek.account_objects().iter().any(|o| o.kek_id == two.kek_id));
            round_trip(&*kek).unwrap();
            round_trip(&acc_two).unwrap();
            assert!(matches!(
                acc_one.unwrap(&wrapped, &ctx()),
                Err(CryptoError::KeyUnavailable(_))
            ));

            // The token goes away and comes back without account two's object: the reconnect
            // drops that key alone.
            hsm.unplug();
            assert!(round_trip(&*kek).is_err());
            hsm.plug();
            pkcs11_tool(
                hsm,
                testing::TOKEN,
                &[
                    "--delete-object",
                    "--type",
                    "secrkey",
                    "--label",
                    "coffer-kek.account.two",
                ],
            );
            round_trip(&*kek).unwrap();
            assert!(matches!(
                acc_two.wrap(&DataKey::generate(), &ctx()),
                Err(CryptoError::KeyUnavailable(_))
            ));
            assert!(
                kek.account_objects().is_empty(),
                "{:?}",
                kek.account_objects()
            );

            // A recorded object that is gone is refused by name when loaded.
            match kek.load_account_key(&two) {
                Err(HsmError::KeyNotFound(m)) => {
                    assert!(m.contains("coffer-kek.account.two"), "{m}")
                }
                other => panic!("{other:?}"),
            }
        },
    );
}

#[test]
fn an_operator_named_account_key_must_be_an_aes_256_key_of_the_instance_token() {
    testing::in_own_process(
        "an_operator_named_account_key_must_be_an_aes_256_key_of_the_instance_token",
        |hsm| {
            let keygen_with = |token: &str, kind: &str, label: &str, extra: &[&str]| {
                let mut args = vec!["--keygen", "--key-type", kind, "--label", label];
                args.push("--sensitive");
                args.extend_from_slice(extra);
                pkcs11_tool(hsm, token, &args);
            };
            let keygen = |token: &str, kind: &str, label: &str| {
                keygen_with(token, kind, label, &["--private", "--id", "a1"]);
            };
            // pkcs11-tool makes an object public unless told --private.
            keygen_with(testing::TOKEN, "AES:32", "public", &["--id", "a2"]);
            keygen_with(testing::TOKEN, "AES:32", "no-id", &["--private"]);
            keygen(testing::TOKEN, "AES:16", "short");
            keygen(testing::TOKEN, "GENERIC:32", "generic");
            hsm.init_token("other");
            keygen("other", "AES:32", "elsewhere");
            // Opened after the tokens exist: SoftHSM lists its slots when it is initialised.
            let (kek, _) = Pkcs11Kek::open_or_generate(config(hsm)).unwrap();
            let kek = Arc::new(kek);
            let uri = |token: &str, object: &str| Pkcs11Uri::parse(&hsm.uri_for(token, object));
            // pkcs11-tool cannot clear CKA_WRAP (SoftHSM's default is true): made here.
            kek.create_test_key(&TestKey::account("named", &[0xa1], [1; 32]))
                .unwrap();
            for (label, id, key) in [
                (
                    "extractable",
                    0xb1,
                    TestKey {
                        extractable: true,
                        ..TestKey::account("extractable", &[], [2; 32])
                    },
                ),
                (
                    "wraps",
                    0xb2,
                    TestKey {
                        wrap: true,
                        ..TestKey::account("wraps", &[], [3; 32])
                    },
                ),
                (
                    "derives",
                    0xb3,
                    TestKey {
                        derive: true,
                        ..TestKey::account("derives", &[], [4; 32])
                    },
                ),
            ] {
                kek.create_test_key(&TestKey {
                    label,
                    id: &[id],
                    ..key
                })
                .unwrap();
            }

            for (uri, expect) in [
                (uri("other", "elsewhere"), "not the instance KEK's"),
                (
                    uri(testing::TOKEN, "nope"),
                    "has no object labelled \"nope\"",
                ),
                (uri(testing::TOKEN, "short"), "16 bytes long"),
                (uri(testing::TOKEN, "generic"), "not AES"),
                (uri(testing::TOKEN, OBJECT), "already uses"),
                (uri(testing::TOKEN, "public"), "is not private (CKA_PRIVATE"),
                (uri(testing::TOKEN, "no-id"), "has no CKA_ID"),
                // The value must stay in the token.
                (
                    uri(testing::TOKEN, "extractable"),
                    "is extractable (CKA_EXTRACTABLE",
                ),
                (
                    uri(testing::TOKEN, "wraps"),
                    "may wrap other keys (CKA_WRAP",
                ),
                (
                    uri(testing::TOKEN, "derives"),
                    "may derive keys (CKA_DERIVE",
                ),
                (
                    Pkcs11Uri::parse(
                        "pkcs11:token=coffer;object=named?module-path=/nonexistent/p11.so",
                    ),
                    "module /nonexistent/p11.so",
                ),
            ] {
                let uri = uri.unwrap();
                let e = kek.open_account_key(&uri).unwrap_err().to_string();
                assert!(e.contains(expect), "{uri}: {e}");
                assert!(!e.contains(USER_PIN), "{e}");
            }
            assert_eq!(kek.objects().len(), 1, "nothing refused is in use");

            // The good one: used by id, its CKA_ID kept so that it is found again exactly.
            let named = kek
                .open_account_key(&uri(testing::TOKEN, "named").unwrap())
                .unwrap();
            assert_eq!(named.label, "named");
            assert!(named.cka_id.is_some(), "{named:?}");
            round_trip(&kek.version(&named.kek_id).unwrap()).unwrap();
            // Taken twice: refused, it is in use.
            let e = kek
                .open_account_key(&uri(testing::TOKEN, "named").unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains("already uses"), "{e}");

            // No account path takes over, forgets or destroys the instance KEK's own key.
            let instance = kek.objects().remove(0);
            let e = kek.load_account_key(&instance).unwrap_err().to_string();
            assert!(e.contains("instance KEK's"), "{e}");
            kek.forget_account_key(&instance.kek_id);
            let e = kek.destroy_account_key(&instance).unwrap_err().to_string();
            assert!(e.contains("instance KEK's"), "{e}");
            assert_eq!(kek.objects(), vec![instance.clone()]);
            assert!(kek.holds(&instance).unwrap());
            let wrapped = kek.wrap(&DataKey::generate(), &ctx()).unwrap();
            kek.unwrap(&wrapped, &ctx()).unwrap();
            // An account's own key is forgotten by the account path.
            kek.forget_account_key(&named.kek_id);
            assert!(kek.account_objects().is_empty());
        },
    );
}

/// Writes an AES-256 key object fit for an account with the value `key` under `label` and
/// CKA_ID `id`.
fn write_key(kek: &Pkcs11Kek, label: &str, id: u8, key: &[u8; 32]) {
    kek.create_test_key(&TestKey::account(label, &[id], *key))
        .unwrap();
}

fn delete_key(hsm: &SoftHsm, label: &str) {
    pkcs11_tool(
        hsm,
        testing::TOKEN,
        &["--delete-object", "--type", "secrkey", "--label", label],
    );
}

#[test]
fn an_account_key_is_not_dropped_for_a_lost_login() {
    testing::in_own_process("an_account_key_is_not_dropped_for_a_lost_login", |hsm| {
        let (kek, _) = Pkcs11Kek::open_or_generate(config(hsm)).unwrap();
        let kek = Arc::new(kek);
        let one = kek
            .generate_account_key("coffer-kek.account.one", &[1; 16])
            .unwrap();
        let acc_one = kek.version(&one.kek_id).unwrap();
        round_trip(&acc_one).unwrap();
        // The token forgets the login (a reset, a failover): the call's session sees no
        // private object, which must not pass for the account's object being gone.
        kek.log_out().unwrap();
        let wrapped = acc_one.wrap(&DataKey::generate(), &ctx());
        assert!(wrapped.is_err(), "a call without a login succeeded");
        // The pool broke and reconnects (logged in again): the account's key serves.
        round_trip(&acc_one).unwrap();
        round_trip(&*kek).unwrap();
        assert_eq!(kek.account_objects(), vec![one]);
    });
}

#[test]
fn an_account_key_that_comes_back_or_is_replaced_is_told_apart_without_a_restart() {
    testing::in_own_process(
        "an_account_key_that_comes_back_or_is_replaced_is_told_apart_without_a_restart",
        |hsm| {
            const LABEL: &str = "team-w";
            let value = [7u8; 32];
            let (kek, _) = Pkcs11Kek::open_or_generate(config(hsm)).unwrap();
            let kek = Arc::new(kek);
            write_key(&kek, LABEL, 0x0a, &value);
            let uri = Pkcs11Uri::parse(&hsm.uri_for(testing::TOKEN, LABEL)).unwrap();
            let object = kek.open_account_key(&uri).unwrap();
            let acc = kek.version(&object.kek_id).unwrap();
            round_trip(&acc).unwrap();
            let wrapped = acc.wrap(&DataKey::generate(), &ctx()).unwrap();

            // Gone: the account fails alone, by name; back: it serves at its next call.
            delete_key(hsm, LABEL);
            match acc.unwrap(&wrapped, &ctx()) {
                Err(CryptoError::KeyUnavailable(m)) => {
                    assert!(m.contains("team-w") && m.contains("no longer in"), "{m}")
                }
                other => panic!("{other:?}"),
            }
            round_trip(&*kek).unwrap();
            assert!(acc.unwrap(&wrapped, &ctx()).is_err());
            write_key(&kek, LABEL, 0x0a, &value);
            round_trip(&acc).unwrap();
            acc.unwrap(&wrapped, &ctx()).unwrap();

            // Gone, then back while the token is away: the reconnect takes it up again.
            delete_key(hsm, LABEL);
            assert!(round_trip(&acc).is_err());
            assert!(kek.account_objects().is_empty());
            write_key(&kek, LABEL, 0x0a, &value);
            hsm.unplug();
            assert!(round_trip(&*kek).is_err());
            hsm.plug();
            round_trip(&*kek).unwrap();
            assert_eq!(kek.account_objects(), vec![object.clone()]);
            acc.unwrap(&wrapped, &ctx()).unwrap();

            // Replaced by another key under the same label and CKA_ID: that account fails by
            // name, the pool stays up for the instance KEK; the right key back serves again.
            delete_key(hsm, LABEL);
            write_key(&kek, LABEL, 0x0a, &[8u8; 32]);
            match acc.unwrap(&wrapped, &ctx()) {
                Err(CryptoError::KeyUnavailable(m)) => {
                    assert!(m.contains("team-w") && m.contains("another key"), "{m}")
                }
                other => panic!("{other:?}"),
            }
            let reconnects = kek.reconnects();
            round_trip(&*kek).unwrap();
            assert_eq!(kek.reconnects(), reconnects, "the pool was rebuilt");
            assert!(kek.account_objects().is_empty());
            delete_key(hsm, LABEL);
            write_key(&kek, LABEL, 0x0a, &value);
            acc.unwrap(&wrapped, &ctx()).unwrap();
        },
    );
}

#[test]
fn a_lost_account_key_is_looked_for_at_most_once_per_backoff_and_at_each_reconnect() {
    testing::in_own_process(
        "a_lost_account_key_is_looked_for_at_most_once_per_backoff_and_at_each_reconnect",
        |hsm| {
            const LABEL: &str = "team-x";
            let value = [9u8; 32];
            let mut config = config(hsm);
            config.reconnect_backoff = Duration::from_secs(3600);
            let (kek, _) = Pkcs11Kek::open_or_generate(config).unwrap();
            let kek = Arc::new(kek);
            write_key(&kek, LABEL, 0x0b, &value);
            let uri = Pkcs11Uri::parse(&hsm.uri_for(testing::TOKEN, LABEL)).unwrap();
            let object = kek.open_account_key(&uri).unwrap();
            let acc = kek.version(&object.kek_id).unwrap();
            round_trip(&acc).unwrap();

            delete_key(hsm, LABEL);
            assert!(round_trip(&acc).is_err());
            write_key(&kek, LABEL, 0x0b, &value);
            // Back in the token, but not looked for again before the backoff is over.
            assert!(round_trip(&acc).is_err());
            assert!(kek.account_objects().is_empty());
            // Meanwhile no other account (set-kek naming the same object) may take it: that
            // would end this account's recovery even if the request were refused later.
            let e = kek.open_account_key(&uri).unwrap_err().to_string();
            assert!(e.contains("looked for"), "{e}");
            // A reconnect (here: the login lost, so the next instance call breaks the pool and
            // the one after logs in again) looks for it regardless.
            kek.log_out().unwrap();
            assert!(round_trip(&*kek).is_err());
            round_trip(&*kek).unwrap();
            assert_eq!(kek.account_objects(), vec![object]);
            round_trip(&acc).unwrap();
        },
    );
}

#[test]
fn an_account_key_is_checked_as_an_account_key_whenever_it_is_loaded() {
    testing::in_own_process(
        "an_account_key_is_checked_as_an_account_key_whenever_it_is_loaded",
        |hsm| {
            const LABEL: &str = "team-v";
            let value = [5u8; 32];
            let (kek, _) = Pkcs11Kek::open_or_generate(config(hsm)).unwrap();
            let kek = Arc::new(kek);
            write_key(&kek, LABEL, 0x0c, &value);
            let uri = Pkcs11Uri::parse(&hsm.uri_for(testing::TOKEN, LABEL)).unwrap();
            let object = kek.open_account_key(&uri).unwrap();
            let acc = kek.version(&object.kek_id).unwrap();
            round_trip(&acc).unwrap();

            // The same key value comes back as a wrapping key (CKA_WRAP): the reconnect that
            // follows (its old handle fails, the token says the key is still there) sets it
            // aside, and a load (at a start) refuses it, as set-kek would.
            delete_key(hsm, LABEL);
            kek.create_test_key(&TestKey {
                wrap: true,
                ..TestKey::account(LABEL, &[0x0c], value)
            })
            .unwrap();
            assert!(round_trip(&acc).is_err());
            round_trip(&*kek).unwrap();
            match round_trip(&acc) {
                Err(CryptoError::KeyUnavailable(_)) => {}
                other => panic!("{other:?}"),
            }
            assert!(kek.account_objects().is_empty());
            kek.forget_account_key(&object.kek_id);
            let e = kek.load_account_key(&object).unwrap_err().to_string();
            assert!(e.contains("may wrap other keys"), "{e}");
            assert!(kek.account_objects().is_empty());

            // Public: refused too.
            delete_key(hsm, LABEL);
            kek.create_test_key(&TestKey {
                private: false,
                ..TestKey::account(LABEL, &[0x0c], value)
            })
            .unwrap();
            let e = kek.load_account_key(&object).unwrap_err().to_string();
            assert!(e.contains("is not private"), "{e}");

            // Fit again: loaded.
            delete_key(hsm, LABEL);
            write_key(&kek, LABEL, 0x0c, &value);
            kek.load_account_key(&object).unwrap();
            round_trip(&kek.version(&object.kek_id).unwrap()).unwrap();
        },
    );
}
