//! A PKCS#11 KEK with several key objects (its versions), against SoftHSM2: generating a
//! version, wrapping with each, finding every one again after a reconnect and at open, and
//! destroying one. Each test runs in its own process (see `softhsm.rs`).

use std::sync::Arc;
use std::time::Duration;

use coffer_crypto::{CryptoError, DataKey, DekContext, KekProvider};
use coffer_hsm::testing::{self, OBJECT, SoftHsm, USER_PIN};
use coffer_hsm::{HsmError, KeyObject, Pin, Pkcs11Config, Pkcs11Kek, Pkcs11Uri};
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
        account: Some(AccountId::from_bytes([3; 16])),
        dek: DekId::from_bytes([4; 16]),
        purpose: "dek",
    }
}

/// Runs pkcs11-tool, logged in to the test token, and returns its stdout.
fn pkcs11_tool(hsm: &SoftHsm, args: &[&str]) -> String {
    let out = std::process::Command::new("pkcs11-tool")
        .args(["--module", hsm.module().to_str().unwrap()])
        .args([
            "--token-label",
            testing::TOKEN,
            "--login",
            "--pin",
            USER_PIN,
        ])
        .args(args)
        .output()
        .expect("run pkcs11-tool");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The objects of any class pkcs11-tool lists under `label`, one string each.
fn listed(hsm: &SoftHsm, label: &str) -> Vec<String> {
    let list = pkcs11_tool(hsm, &["--list-objects"]);
    let mut objects: Vec<String> = Vec::new();
    for line in list.lines() {
        match objects.last_mut() {
            Some(last) if line.starts_with(' ') => {
                last.push_str(line);
                last.push('\n');
            }
            _ => objects.push(format!("{line}\n")),
        }
    }
    objects.retain(|o| {
        o.lines().any(|l| {
            let l = l.trim();
            l.strip_prefix("label:")
                .is_some_and(|v| v.trim().trim_matches('\'') == label)
        })
    });
    objects
}

fn has_key_with_id(objects: &[String], id_hex: &str) -> bool {
    objects.iter().any(|o| {
        o.starts_with("Secret Key Object")
            && o.lines()
                .any(|l| l.trim().strip_prefix("ID:").map(str::trim) == Some(id_hex))
    })
}

fn has_data_object(objects: &[String]) -> bool {
    objects.iter().any(|o| o.starts_with("Data object"))
}

#[test]
fn objects_of_another_deployment_under_a_version_label_survive_rotation_and_retirement() {
    testing::in_own_process(
        "objects_of_another_deployment_under_a_version_label_survive_rotation_and_retirement",
        |hsm| {
            let label = "coffer-kek.v2";
            // Another deployment sharing the token and label, kept apart by CKA_ID, already
            // rotated to v2; and a data object someone stored under the same label.
            pkcs11_tool(
                hsm,
                &[
                    "--keygen",
                    "--key-type",
                    "AES:32",
                    "--sensitive",
                    "--label",
                    label,
                    "--id",
                    "70726f64",
                ],
            );
            let data = hsm.tokens_dir().with_file_name("note.bin");
            std::fs::write(&data, b"not a key").unwrap();
            pkcs11_tool(
                hsm,
                &[
                    "--write-object",
                    data.to_str().unwrap(),
                    "--type",
                    "data",
                    "--label",
                    label,
                    "--private",
                ],
            );
            let before = listed(hsm, label);
            assert!(has_key_with_id(&before, "70726f64"), "{before:?}");
            assert!(has_data_object(&before), "{before:?}");

            let (kek, _) = Pkcs11Kek::open_or_generate(config(hsm)).unwrap();
            let kek = Arc::new(kek);
            let v1 = kek.objects().remove(0);
            // Our rotation works with them present, and leaves them.
            let v2 = kek.generate_version(label, &[0xab; 16]).unwrap();
            let ours = hex::encode([0xab; 16]);
            let after = listed(hsm, label);
            assert!(has_key_with_id(&after, "70726f64"), "{after:?}");
            assert!(has_data_object(&after), "{after:?}");
            assert!(has_key_with_id(&after, &ours), "{after:?}");
            let two = kek.version(&v2.kek_id).unwrap();
            let dek = DataKey::generate();
            let wrapped = two.wrap(&dek, &ctx()).unwrap();
            assert_eq!(wrapped.kek_id, v2.kek_id);
            drop(two);
            drop(kek);

            // Found again by label and CKA_ID among the others.
            let reopened =
                Arc::new(Pkcs11Kek::open_versions(config(hsm), &[v1.clone(), v2.clone()]).unwrap());
            assert_eq!(
                reopened.unwrap(&wrapped, &ctx()).unwrap().expose_secret(),
                dek.expose_secret()
            );

            // Retiring our v2 destroys our object only.
            assert!(reopened.destroy_version(&v2).unwrap());
            let retired = listed(hsm, label);
            assert!(!has_key_with_id(&retired, &ours), "{retired:?}");
            assert!(has_key_with_id(&retired, "70726f64"), "{retired:?}");
            assert!(has_data_object(&retired), "{retired:?}");

            // A version recorded without a CKA_ID is searched by label alone: only the key
            // whose check value is its KEK id goes, the other deployment's key stays.
            let by_label = KeyObject {
                cka_id: None,
                ..v2.clone()
            };
            let again = reopened.generate_version(label, &[0xcd; 16]).unwrap();
            let by_label_again = KeyObject {
                cka_id: None,
                ..again.clone()
            };
            assert!(
                !reopened.destroy_version(&by_label).unwrap(),
                "already gone"
            );
            assert!(reopened.destroy_version(&by_label_again).unwrap());
            let last = listed(hsm, label);
            assert!(
                !has_key_with_id(&last, &hex::encode([0xcd; 16])),
                "{last:?}"
            );
            assert!(has_key_with_id(&last, "70726f64"), "{last:?}");
            assert!(has_data_object(&last), "{last:?}");
            assert!(reopened.version(&again.kek_id).is_none());
            // v1 is untouched throughout.
            assert!(reopened.holds(&v1).unwrap());
        },
    );
}

#[test]
fn versions_are_generated_found_again_and_destroyed() {
    testing::in_own_process("versions_are_generated_found_again_and_destroyed", |hsm| {
        // A leftover of an interrupted rotation under the new label (made by another program).
        pkcs11_tool(
            hsm,
            &[
                "--keygen",
                "--key-type",
                "AES:32",
                "--sensitive",
                "--label",
                "coffer-kek.v2",
                "--id",
                "7374616c65",
            ],
        );
        let (kek, _) = Pkcs11Kek::open_or_generate(config(hsm)).unwrap();
        let kek = Arc::new(kek);
        let v1 = kek.objects().remove(0);
        let leftover = KeyObject {
            label: "coffer-kek.v2".into(),
            cka_id: Some(b"stale".to_vec()),
            kek_id: v1.kek_id.clone(),
        };
        assert!(kek.holds(&leftover).unwrap());
        let v2 = kek.generate_version("coffer-kek.v2", &[7; 16]).unwrap();
        assert_ne!(v2.kek_id, v1.kek_id);
        assert!(
            kek.holds(&leftover).unwrap(),
            "an object under the label is never destroyed to make room"
        );
        assert!(kek.holds(&v2).unwrap());
        assert_eq!(v2.cka_id.as_deref(), Some(&[7u8; 16][..]));
        // A label in use is never destroyed to make room.
        let in_use = kek.generate_version(OBJECT, &[9; 16]).unwrap_err();
        assert!(matches!(in_use, HsmError::WrongKey(_)), "{in_use}");
        assert!(kek.holds(&v1).unwrap());

        let one = kek.version(&v1.kek_id).unwrap();
        let two = kek.version(&v2.kek_id).unwrap();
        let dek = DataKey::generate();
        let by_one = one.wrap(&dek, &ctx()).unwrap();
        let by_two = two.wrap(&dek, &ctx()).unwrap();
        assert_eq!(by_one.kek_id, v1.kek_id);
        assert_eq!(by_two.kek_id, v2.kek_id);
        // Each version opens its own wraps; the KEK opens either.
        assert!(matches!(
            one.unwrap(&by_two, &ctx()),
            Err(CryptoError::KeyUnavailable(_))
        ));
        for wrapped in [&by_one, &by_two] {
            assert_eq!(
                kek.unwrap(wrapped, &ctx()).unwrap().expose_secret(),
                dek.expose_secret()
            );
        }

        // After the token goes away and comes back, every version is found again.
        hsm.unplug();
        assert!(two.unwrap(&by_two, &ctx()).is_err());
        hsm.plug();
        assert_eq!(
            two.unwrap(&by_two, &ctx()).unwrap().expose_secret(),
            dek.expose_secret()
        );
        assert_eq!(
            one.unwrap(&by_one, &ctx()).unwrap().expose_secret(),
            dek.expose_secret()
        );

        // Destroyed: gone from the token, and nothing unwraps with it any more.
        assert!(kek.destroy_version(&v1).unwrap());
        assert!(!kek.holds(&v1).unwrap());
        assert!(
            !kek.destroy_version(&v1).unwrap(),
            "destroying twice is a no-op"
        );
        assert!(matches!(
            kek.unwrap(&by_one, &ctx()),
            Err(CryptoError::KeyUnavailable(_))
        ));
        assert!(kek.version(&v1.kek_id).is_none());
        drop((one, two));
        drop(kek);

        // Opened again by its objects: v2 is there, v1 is refused by name.
        let reopened = Pkcs11Kek::open_versions(config(hsm), std::slice::from_ref(&v2)).unwrap();
        assert_eq!(reopened.current_kek_id(), v2.kek_id);
        assert_eq!(
            reopened.unwrap(&by_two, &ctx()).unwrap().expose_secret(),
            dek.expose_secret()
        );
        drop(reopened);
        let missing = Pkcs11Kek::open_versions(config(hsm), &[v1.clone(), v2.clone()])
            .err()
            .unwrap();
        let msg = missing.to_string();
        assert!(matches!(missing, HsmError::KeyNotFound(_)), "{msg}");
        assert!(msg.contains(&format!("{OBJECT:?}")), "{msg}");
        assert!(msg.contains(&v1.kek_id.0), "{msg}");
        // An object under a version's label and id that is another key is refused.
        let forged = KeyObject {
            kek_id: v1.kek_id.clone(),
            ..v2.clone()
        };
        let wrong = Pkcs11Kek::open_versions(config(hsm), &[forged])
            .err()
            .unwrap();
        assert!(matches!(wrong, HsmError::WrongKey(_)), "{wrong}");
    });
}
