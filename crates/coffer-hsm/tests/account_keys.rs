//! Accounts' own KEKs in the instance KEK's token, against SoftHSM2: generated or taken key
//! objects sharing the instance's pool, an account key that goes missing failing alone (the
//! pool stays up for the instance KEK, at a call and at a reconnect), and the refusals of an
//! operator's URI. Each test runs in its own process (see `softhsm.rs`).

use std::sync::Arc;
use std::time::Duration;

use coffer_crypto::{CryptoError, DataKey, DekContext, KekProvider};
use coffer_hsm::testing::{self, OBJECT, SoftHsm, USER_PIN};
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
            assert!(!kek.objects().iter().any(|o| o.kek_id == one.kek_id));
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
            assert_eq!(kek.objects().len(), 1, "{:?}", kek.objects());

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
            let keygen = |token: &str, kind: &str, label: &str| {
                pkcs11_tool(
                    hsm,
                    token,
                    &[
                        "--keygen",
                        "--key-type",
                        kind,
                        "--label",
                        label,
                        "--sensitive",
                        "--id",
                        "a1",
                    ],
                );
            };
            keygen(testing::TOKEN, "AES:32", "named");
            keygen(testing::TOKEN, "AES:16", "short");
            keygen(testing::TOKEN, "GENERIC:32", "generic");
            hsm.init_token("other");
            keygen("other", "AES:32", "elsewhere");
            // Opened after the tokens exist: SoftHSM lists its slots when it is initialised.
            let (kek, _) = Pkcs11Kek::open_or_generate(config(hsm)).unwrap();
            let kek = Arc::new(kek);
            let uri = |token: &str, object: &str| Pkcs11Uri::parse(&hsm.uri_for(token, object));

            for (uri, expect) in [
                (uri("other", "elsewhere"), "not the instance KEK's"),
                (
                    uri(testing::TOKEN, "nope"),
                    "has no object labelled \"nope\"",
                ),
                (uri(testing::TOKEN, "short"), "16 bytes long"),
                (uri(testing::TOKEN, "generic"), "not AES"),
                (uri(testing::TOKEN, OBJECT), "already uses"),
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
        },
    );
}
