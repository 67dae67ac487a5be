//! The pool against SoftHSM2: handles found in one connection are never used after a
//! reconnect (each test in its own process, see `testing::in_own_process`).

use std::time::Duration;

use coffer_crypto::{DataKey, DekContext, KekProvider};
use zeroize::Zeroizing;

use crate::testing::{self, OBJECT, USER_PIN};
use crate::token::{self, Holder};
use crate::{Pin, Pkcs11Config, Pkcs11Kek, Pkcs11Uri};

fn ctx() -> DekContext<'static> {
    DekContext {
        account: None,
        dek: coffer_types::DekId::from_bytes([6; 16]),
        purpose: "dek",
    }
}

#[test]
fn a_handle_found_before_a_reconnect_is_not_used_after_it() {
    testing::in_own_process(
        "pool::tests::a_handle_found_before_a_reconnect_is_not_used_after_it",
        |hsm| {
            let uri = Pkcs11Uri::parse(&hsm.uri_for(testing::TOKEN, OBJECT)).unwrap();
            let pin = Pin::resolve(&uri, Some(Zeroizing::new(USER_PIN.to_owned()))).unwrap();
            let mut config = Pkcs11Config::new(uri, pin);
            config.reconnect_backoff = Duration::ZERO;
            let (kek, _) = Pkcs11Kek::open_or_generate(config).unwrap();
            let object = kek
                .generate_account_key("coffer-kek.account.one", &[1; 16])
                .unwrap();
            let token = kek.pool.uri().token_description();
            let find = || {
                kek.pool
                    .with_ro_session_at(|s| token::load(s, &object, &token, Holder::Account))
                    .unwrap()
            };
            // Found (a call looking for a lost key, a set-kek, a generation) ...
            let (handle, generation) = find();
            // ... then the token reconnects before it is put to use: the login is lost, the
            // next call breaks the pool and the one after logs in again.
            kek.log_out().unwrap();
            assert!(kek.wrap(&DataKey::generate(), &ctx()).is_err());
            kek.wrap(&DataKey::generate(), &ctx()).unwrap();
            assert_eq!(kek.reconnects(), 1);
            // The old handle may name another object now: refused everywhere.
            kek.pool.detach(&object.kek_id);
            assert!(!kek.pool.restore(&object, handle, generation));
            assert_eq!(kek.pool.lost(&object.kek_id).as_ref(), Some(&object));
            for e in [
                kek.pool
                    .add_detachable_key(object.clone(), handle, generation)
                    .unwrap_err(),
                kek.pool
                    .add_key(object.clone(), handle, generation)
                    .unwrap_err(),
            ] {
                assert!(e.to_string().contains("reconnected"), "{e}");
            }
            assert!(kek.account_objects().is_empty());
            // Found again in this connection: used.
            let (handle, generation) = find();
            assert!(kek.pool.restore(&object, handle, generation));
            assert_eq!(kek.account_objects(), vec![object.clone()]);
            let acc = std::sync::Arc::new(kek);
            let version = acc.version(&object.kek_id).unwrap();
            let wrapped = version.wrap(&DataKey::generate(), &ctx()).unwrap();
            version.unwrap(&wrapped, &ctx()).unwrap();
        },
    );
}
