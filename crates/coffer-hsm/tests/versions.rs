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

#[test]
fn versions_are_generated_found_again_and_destroyed() {
    testing::in_own_process("versions_are_generated_found_again_and_destroyed", |hsm| {
        // A leftover of an interrupted rotation under the new label (made by another program).
        let out = std::process::Command::new("pkcs11-tool")
            .args(["--module", hsm.module().to_str().unwrap()])
            .args([
                "--token-label",
                testing::TOKEN,
                "--login",
                "--pin",
                USER_PIN,
            ])
            .args(["--keygen", "--key-type", "AES:32", "--sensitive"])
            .args(["--label", "coffer-kek.v2", "--id", "7374616c65"])
            .output()
            .expect("run pkcs11-tool");
        assert!(out.status.success(), "{out:?}");
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
        assert!(!kek.holds(&leftover).unwrap(), "the leftover is destroyed");
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
