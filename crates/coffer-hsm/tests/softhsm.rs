//! The PKCS#11 KEK against a real token (SoftHSM2). Each test runs in its own process with its
//! own token directory (`testing::in_own_process`): SoftHSM reads its configuration once per
//! process, and a module is initialised once per process, so a test that inspects the token
//! directly does so after dropping the provider.

use std::sync::Barrier;
use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use coffer_crypto::{CryptoError, DataKey, DekContext, KekId, KekProvider, WrappedDataKey};
use coffer_hsm::testing::{self, OBJECT, SoftHsm, USER_PIN};
use coffer_hsm::{
    FORMAT_PKCS11, HsmError, KeyOrigin, Pin, Pkcs11Config, Pkcs11Kek, Pkcs11Uri, WRAPPED_LEN,
};
use coffer_types::{AccountId, DekId};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

fn config(hsm: &SoftHsm, object: &str, pin: &str) -> Pkcs11Config {
    let uri = Pkcs11Uri::parse(&hsm.uri_for(testing::TOKEN, object)).unwrap();
    let pin = Pin::resolve(&uri, Some(Zeroizing::new(pin.to_owned()))).unwrap();
    let mut config = Pkcs11Config::new(uri, pin);
    config.reconnect_backoff = Duration::ZERO;
    config
}

fn generate(hsm: &SoftHsm, object: &str) -> Pkcs11Kek {
    let (kek, _) = Pkcs11Kek::open_or_generate(config(hsm, object, USER_PIN)).unwrap();
    kek
}

fn ctx(n: u8) -> DekContext<'static> {
    DekContext {
        account: Some(AccountId::from_bytes([n; 16])),
        dek: DekId::from_bytes([n.wrapping_add(1); 16]),
        purpose: "dek",
    }
}

/// A logged-in session of the test's own, for inspecting the token behind the provider's back.
/// Only while no provider is open in this process.
fn inspect(hsm: &SoftHsm, body: impl FnOnce(&Session)) {
    let module = Pkcs11::new(hsm.module()).unwrap();
    module
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = module
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| module.get_token_info(*s).unwrap().label() == testing::TOKEN)
        .unwrap();
    {
        let session = module.open_rw_session(slot).unwrap();
        session
            .login(UserType::User, Some(&AuthPin::from(USER_PIN.to_owned())))
            .unwrap();
        body(&session);
    }
    module.finalize().unwrap();
}

fn find(session: &Session, label: &str) -> cryptoki::object::ObjectHandle {
    let found = session
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .unwrap();
    assert_eq!(found.len(), 1, "{label}");
    found[0]
}

fn aes_key(label: &str, len: u64, extra: &[Attribute]) -> Vec<Attribute> {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(len.into()),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    template.extend_from_slice(extra);
    template
}

#[test]
fn init_generates_a_sensitive_never_extractable_aes256_key_whose_value_is_refused() {
    testing::in_own_process(
        "init_generates_a_sensitive_never_extractable_aes256_key_whose_value_is_refused",
        |hsm| {
            let (kek, origin) = Pkcs11Kek::open_or_generate(config(hsm, OBJECT, USER_PIN)).unwrap();
            assert_eq!(origin, KeyOrigin::Generated);
            let id = kek.current_kek_id();
            assert!(id.0.starts_with("pkcs11:") && id.0.len() == 7 + 16, "{id}");
            let dek = DataKey::generate();
            let wrapped = kek.wrap(&dek, &ctx(1)).unwrap();
            drop(kek);

            inspect(hsm, |session| {
                let key = find(session, OBJECT);
                let attrs = session
                    .get_attributes(
                        key,
                        &[
                            AttributeType::Class,
                            AttributeType::KeyType,
                            AttributeType::ValueLen,
                            AttributeType::Token,
                            AttributeType::Sensitive,
                            AttributeType::Extractable,
                            AttributeType::AlwaysSensitive,
                            AttributeType::NeverExtractable,
                            AttributeType::Encrypt,
                            AttributeType::Decrypt,
                            AttributeType::Wrap,
                            AttributeType::Unwrap,
                        ],
                    )
                    .unwrap();
                let expected = [
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32u64.into()),
                    Attribute::Token(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::AlwaysSensitive(true),
                    Attribute::NeverExtractable(true),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Wrap(false),
                    Attribute::Unwrap(false),
                ];
                assert_eq!(attrs, expected);

                // The token refuses to reveal the key's value...
                let info = session
                    .get_attribute_info(key, &[AttributeType::Value])
                    .unwrap();
                assert!(matches!(info[..], [AttributeInfo::Sensitive]), "{info:?}");
                assert!(
                    session
                        .get_attributes(key, &[AttributeType::Value])
                        .unwrap()
                        .is_empty()
                );
                // ...and to wrap it out under a key we would know.
                let outer = session
                    .generate_key(
                        &Mechanism::AesKeyGen,
                        &aes_key(
                            "outer",
                            32,
                            &[Attribute::Wrap(true), Attribute::Token(false)],
                        ),
                    )
                    .unwrap();
                match session.wrap_key(&Mechanism::AesKeyWrapPad, outer, key) {
                    Err(CkError::Pkcs11(RvError::KeyUnextractable, _)) => {}
                    other => panic!("wrapping the KEK out: {other:?}"),
                }
            });

            // The key made at init is found again, under the same id, and opens what it wrapped.
            let (kek, origin) = Pkcs11Kek::open_or_generate(config(hsm, OBJECT, USER_PIN)).unwrap();
            assert_eq!(origin, KeyOrigin::Existing);
            assert_eq!(kek.current_kek_id(), id);
            let back = kek.unwrap(&wrapped, &ctx(1)).unwrap();
            assert_eq!(back.expose_secret(), dek.expose_secret());
        },
    );
}

#[test]
fn open_requires_the_key_and_checks_its_id() {
    testing::in_own_process("open_requires_the_key_and_checks_its_id", |hsm| {
        match Pkcs11Kek::open(config(hsm, OBJECT, USER_PIN), None) {
            Err(HsmError::KeyNotFound(msg)) => {
                assert!(
                    msg.contains("coffer-kek") && msg.contains("object="),
                    "{msg}"
                )
            }
            other => panic!("{other:?}"),
        }
        let id = generate(hsm, OBJECT).current_kek_id();
        let other_id = generate(hsm, "other").current_kek_id();
        assert_ne!(id, other_id);
        let kek = Pkcs11Kek::open(config(hsm, OBJECT, USER_PIN), Some(&id)).unwrap();
        assert_eq!(kek.current_kek_id(), id);
        drop(kek);
        // The data dir says `id`; the label now names another key.
        match Pkcs11Kek::open(config(hsm, "other", USER_PIN), Some(&id)) {
            Err(HsmError::WrongKey(msg)) => {
                assert!(msg.contains(&id.0) && msg.contains(&other_id.0), "{msg}")
            }
            other => panic!("{other:?}"),
        }
    });
}

/// A token key whose value the test knows, so the wrapped form can be checked independently
/// with aws-lc: the layout and AAD are those docs/envelope-format.md gives.
#[test]
fn the_wrapped_form_is_the_documented_aes_gcm() {
    testing::in_own_process("the_wrapped_form_is_the_documented_aes_gcm", |hsm| {
        const VALUE: [u8; 32] = [0x42; 32];
        inspect(hsm, |session| {
            session
                .create_object(&[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Token(true),
                    Attribute::Label(b"known".to_vec()),
                    Attribute::Value(VALUE.to_vec()),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                ])
                .unwrap();
        });
        let known = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &VALUE).unwrap());
        let kek = generate(hsm, "known");

        // The id is the first 8 bytes of the GCM tag over "coffer/kek-id/v1" and nothing,
        // under the all-zero nonce.
        let mut tag = Vec::new();
        known
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(b"coffer/kek-id/v1"),
                &mut tag,
            )
            .unwrap();
        assert_eq!(
            kek.current_kek_id(),
            KekId(format!("pkcs11:{}", hex::encode(&tag[..8])))
        );

        // What the token wraps, aws-lc opens with the documented AAD.
        let dek = DataKey::generate();
        let wrapped = kek.wrap(&dek, &ctx(3)).unwrap();
        let bytes = &wrapped.bytes;
        assert_eq!(bytes.len(), WRAPPED_LEN);
        assert_eq!(WRAPPED_LEN, 61);
        assert_eq!(bytes[0], FORMAT_PKCS11);
        assert_eq!(FORMAT_PKCS11, 0x02);
        let nonce: [u8; 12] = bytes[1..13].try_into().unwrap();
        assert_ne!(nonce, [0; 12]);
        let mut body = bytes[13..].to_vec();
        let plain = known
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(ctx(3).aad().unwrap()),
                &mut body,
            )
            .unwrap();
        assert_eq!(plain, dek.expose_secret());

        // And what aws-lc seals in that form, the token unwraps.
        let nonce = [7u8; 12];
        let mut body = [9u8; 32].to_vec();
        known
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(ctx(4).aad().unwrap()),
                &mut body,
            )
            .unwrap();
        let mut bytes = vec![0x02];
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&body);
        let wrapped = WrappedDataKey {
            kek_id: kek.current_kek_id(),
            bytes,
        };
        assert_eq!(
            kek.unwrap(&wrapped, &ctx(4)).unwrap().expose_secret(),
            &[9u8; 32]
        );
    });
}

#[test]
fn wrapped_keys_that_do_not_unwrap_are_refused_without_breaking_the_pool() {
    testing::in_own_process(
        "wrapped_keys_that_do_not_unwrap_are_refused_without_breaking_the_pool",
        |hsm| {
            // A DEK wrapped by another KEK of the same token.
            let foreign = {
                let other = generate(hsm, "other");
                other.wrap(&DataKey::generate(), &ctx(1)).unwrap()
            };
            let kek = generate(hsm, OBJECT);
            let dek = DataKey::generate();
            let good = kek.wrap(&dek, &ctx(1)).unwrap();

            match kek.unwrap(&foreign, &ctx(1)) {
                Err(CryptoError::KeyUnavailable(msg)) => {
                    assert!(msg.contains(&foreign.kek_id.0), "{msg}");
                    assert!(msg.contains(&kek.current_kek_id().0), "{msg}");
                }
                other => panic!("{other:?}"),
            }
            let mut bad: Vec<WrappedDataKey> = Vec::new();
            // The foreign bytes under our id: the token cannot open them.
            bad.push(WrappedDataKey {
                kek_id: kek.current_kek_id(),
                ..foreign.clone()
            });
            for i in 0..WRAPPED_LEN {
                let mut flipped = good.clone();
                flipped.bytes[i] ^= 0x01;
                bad.push(flipped);
            }
            let mut short = good.clone();
            short.bytes.pop();
            bad.push(short);
            let mut long = good.clone();
            long.bytes.push(0);
            bad.push(long);
            let mut file_format = good.clone();
            file_format.bytes[0] = 0x01;
            bad.push(file_format);
            bad.push(WrappedDataKey {
                kek_id: kek.current_kek_id(),
                bytes: Vec::new(),
            });
            for wrapped in &bad {
                match kek.unwrap(wrapped, &ctx(1)) {
                    Err(CryptoError::Opaque) => {}
                    other => panic!("{:?}: {other:?}", wrapped.bytes),
                }
            }
            // Another context: same opaque error.
            assert!(matches!(
                kek.unwrap(&good, &ctx(2)),
                Err(CryptoError::Opaque)
            ));
            let other_purpose = DekContext {
                purpose: "token-mac",
                ..ctx(1)
            };
            assert!(matches!(
                kek.unwrap(&good, &other_purpose),
                Err(CryptoError::Opaque)
            ));
            // None of this was taken for the token failing.
            let back = kek.unwrap(&good, &ctx(1)).unwrap();
            assert_eq!(back.expose_secret(), dek.expose_secret());
        },
    );
}

#[test]
fn objects_that_are_not_an_aes256_kek_are_refused() {
    testing::in_own_process("objects_that_are_not_an_aes256_kek_are_refused", |hsm| {
        let usable = [
            Attribute::Sensitive(true),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
        ];
        inspect(hsm, |session| {
            let mech = Mechanism::AesKeyGen;
            session
                .generate_key(&mech, &aes_key("aes128", 16, &usable))
                .unwrap();
            session
                .generate_key(
                    &mech,
                    &aes_key(
                        "not-sensitive",
                        32,
                        &[
                            Attribute::Sensitive(false),
                            Attribute::Encrypt(true),
                            Attribute::Decrypt(true),
                        ],
                    ),
                )
                .unwrap();
            session
                .generate_key(
                    &mech,
                    &aes_key(
                        "no-decrypt",
                        32,
                        &[
                            Attribute::Sensitive(true),
                            Attribute::Encrypt(true),
                            Attribute::Decrypt(false),
                        ],
                    ),
                )
                .unwrap();
            for _ in 0..2 {
                session
                    .generate_key(&mech, &aes_key("twice", 32, &usable))
                    .unwrap();
            }
            session
                .generate_key(
                    &Mechanism::GenericSecretKeyGen,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::GENERIC_SECRET),
                        Attribute::ValueLen(32u64.into()),
                        Attribute::Token(true),
                        Attribute::Sensitive(true),
                        Attribute::Label(b"generic".to_vec()),
                    ],
                )
                .unwrap();
            session
                .create_object(&[
                    Attribute::Class(ObjectClass::DATA),
                    Attribute::Token(true),
                    Attribute::Label(b"data".to_vec()),
                    Attribute::Value(b"not a key".to_vec()),
                ])
                .unwrap();
        });
        for (label, expect) in [
            (
                "aes128",
                "an AES key 16 bytes long; the KEK must be AES-256 (32 bytes)",
            ),
            ("generic", "not AES"),
            ("data", "not a secret key"),
            ("not-sensitive", "not sensitive"),
            ("no-decrypt", "CKA_DECRYPT"),
            (
                "twice",
                "2 objects in token \"coffer\" are labelled \"twice\"; add id=",
            ),
        ] {
            // Never generated over: init refuses the label's object as it is.
            match Pkcs11Kek::open_or_generate(config(hsm, label, USER_PIN)) {
                Err(HsmError::WrongKey(msg)) => {
                    assert!(msg.contains(expect), "{label}: {msg}");
                    assert!(msg.contains(&format!("{label:?}")), "{label}: {msg}");
                }
                other => panic!("{label}: {other:?}"),
            }
        }
    });
}

#[test]
fn a_wrong_pin_or_token_is_refused_naming_the_setting() {
    testing::in_own_process(
        "a_wrong_pin_or_token_is_refused_naming_the_setting",
        |hsm| {
            match Pkcs11Kek::open_or_generate(config(hsm, OBJECT, "not-the-pin")) {
                Err(HsmError::Pin(msg)) => {
                    assert!(msg.contains("refused the user PIN"), "{msg}");
                    assert!(msg.contains("COFFER_PKCS11_PIN"), "{msg}");
                    assert!(!msg.contains("not-the-pin"), "{msg}");
                }
                other => panic!("{other:?}"),
            }
            // From a PIN file, the message names the file.
            let dir = tempfile::tempdir().unwrap();
            let pin_file = dir.path().join("pin");
            std::fs::write(&pin_file, "wrong\n").unwrap();
            std::fs::set_permissions(
                &pin_file,
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .unwrap();
            let uri = Pkcs11Uri::parse(&format!(
                "{}&pin-source=file:{}",
                hsm.uri(),
                pin_file.display()
            ))
            .unwrap();
            let pin = Pin::resolve(&uri, None).unwrap();
            match Pkcs11Kek::open_or_generate(Pkcs11Config::new(uri, pin)) {
                Err(HsmError::Pin(msg)) => {
                    assert!(msg.contains(&pin_file.display().to_string()), "{msg}")
                }
                other => panic!("{other:?}"),
            }

            let uri = Pkcs11Uri::parse(&hsm.uri_for("no-such-token", OBJECT)).unwrap();
            let pin = Pin::resolve(&uri, Some(Zeroizing::new(USER_PIN.into()))).unwrap();
            match Pkcs11Kek::open_or_generate(Pkcs11Config::new(uri, pin)) {
                Err(HsmError::TokenNotFound(msg)) => {
                    assert!(msg.contains("no token \"no-such-token\""), "{msg}");
                    assert!(msg.contains("tokens present: \"coffer\""), "{msg}");
                    assert!(msg.contains("check token="), "{msg}");
                }
                other => panic!("{other:?}"),
            }
            // Nothing was generated by the failed attempts, and the right PIN still works (the
            // wrong ones did not lock it).
            let (_, origin) = Pkcs11Kek::open_or_generate(config(hsm, OBJECT, USER_PIN)).unwrap();
            assert_eq!(origin, KeyOrigin::Generated);
        },
    );
}

#[test]
fn an_unknown_module_is_refused_naming_module_path() {
    // No token needed: loading fails first.
    let dir = tempfile::tempdir().unwrap();
    let not_a_module = dir.path().join("libnot-pkcs11.so");
    std::fs::write(&not_a_module, b"\x7fELF but not really").unwrap();
    for path in [
        dir.path().join("missing.so").display().to_string(),
        not_a_module.display().to_string(),
        dir.path().display().to_string(),
    ] {
        let uri = Pkcs11Uri::parse(&format!("pkcs11:token=t;object=k?module-path={path}")).unwrap();
        let pin = Pin::resolve(&uri, Some(Zeroizing::new("1".into()))).unwrap();
        match Pkcs11Kek::open_or_generate(Pkcs11Config::new(uri, pin)) {
            Err(HsmError::Module(msg)) => {
                assert!(msg.contains(&path), "{msg}");
                assert!(msg.contains("module-path"), "{msg}");
            }
            other => panic!("{path}: {other:?}"),
        }
    }
}

#[test]
fn concurrent_unwraps_run_on_several_sessions() {
    testing::in_own_process("concurrent_unwraps_run_on_several_sessions", |hsm| {
        let mut cfg = config(hsm, OBJECT, USER_PIN);
        cfg.sessions = 4;
        let (kek, _) = Pkcs11Kek::open_or_generate(cfg).unwrap();
        let deks: Vec<(DataKey, WrappedDataKey)> = (0..16)
            .map(|i| {
                let dek = DataKey::generate();
                let wrapped = kek.wrap(&dek, &ctx(i)).unwrap();
                (dek, wrapped)
            })
            .collect();

        // Three sessions busy elsewhere: an unwrap still goes ahead on a fourth.
        let held: Vec<_> = (0..3).map(|_| kek.hold_session().unwrap()).collect();
        let back = kek.unwrap(&deks[0].1, &ctx(0)).unwrap();
        assert_eq!(back.expose_secret(), deks[0].0.expose_secret());
        assert_eq!(kek.sessions(), (4, 4));
        // All four busy: a fifth is not opened.
        let fourth = kek.hold_session().unwrap();
        assert!(kek.hold_session().is_err());
        drop(fourth);
        drop(held);

        // Many threads at once: every result right, never more sessions than the pool's size.
        let threads = 8;
        let barrier = Barrier::new(threads);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (kek, deks, barrier) = (&kek, &deks, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    for round in 0..50 {
                        let i = (t + round) % deks.len();
                        let back = kek.unwrap(&deks[i].1, &ctx(i as u8)).unwrap();
                        assert_eq!(back.expose_secret(), deks[i].0.expose_secret());
                    }
                });
            }
        });
        assert_eq!(kek.sessions(), (4, 4));
    });
}

#[test]
fn a_token_that_goes_away_fails_fast_and_comes_back() {
    testing::in_own_process("a_token_that_goes_away_fails_fast_and_comes_back", |hsm| {
        let kek = generate(hsm, OBJECT);
        let dek = DataKey::generate();
        let wrapped = kek.wrap(&dek, &ctx(1)).unwrap();
        // Several sessions open, so that the break has idle ones to close.
        let held: Vec<_> = (0..3).map(|_| kek.hold_session().unwrap()).collect();
        drop(held);

        hsm.unplug();
        for _ in 0..3 {
            match kek.unwrap(&wrapped, &ctx(1)) {
                Err(CryptoError::KeyUnavailable(msg)) => {
                    assert!(msg.contains("token \"coffer\" is unavailable"), "{msg}")
                }
                other => panic!("unwrap without the token: {other:?}"),
            }
            assert!(matches!(
                kek.wrap(&dek, &ctx(1)),
                Err(CryptoError::KeyUnavailable(_))
            ));
        }

        hsm.plug();
        // The next call reconnects (no backoff in tests), logs in again and finds the key.
        let back = kek.unwrap(&wrapped, &ctx(1)).unwrap();
        assert_eq!(back.expose_secret(), dek.expose_secret());
        let again = kek.wrap(&dek, &ctx(2)).unwrap();
        assert_eq!(
            kek.unwrap(&again, &ctx(2)).unwrap().expose_secret(),
            dek.expose_secret()
        );
    });
}

#[test]
fn a_pin_refused_on_reconnect_is_never_tried_again() {
    testing::in_own_process("a_pin_refused_on_reconnect_is_never_tried_again", |hsm| {
        let kek = generate(hsm, OBJECT);
        let wrapped = kek.wrap(&DataKey::generate(), &ctx(1)).unwrap();
        hsm.unplug();
        assert!(kek.unwrap(&wrapped, &ctx(1)).is_err());
        // In its place a token of the same label whose user PIN is not ours, as after an
        // administrator changed it: the reconnect finds it and its login is refused.
        hsm.init_token_with_pin(testing::TOKEN, "a-changed-pin");
        match kek.unwrap(&wrapped, &ctx(1)) {
            Err(CryptoError::KeyUnavailable(msg)) => {
                assert!(msg.contains("refused the user PIN"), "{msg}");
                assert!(msg.contains("no further login is tried"), "{msg}");
            }
            other => panic!("unwrap after the PIN changed: {other:?}"),
        }
        // The real token comes back, with our PIN: a pool that logged in again would now
        // succeed. It does not try: only a restart (with the right PIN) brings it back.
        hsm.remove_tokens();
        hsm.plug();
        for _ in 0..3 {
            match kek.unwrap(&wrapped, &ctx(1)) {
                Err(CryptoError::KeyUnavailable(msg)) => {
                    assert!(
                        msg.contains("restart the server with the right PIN"),
                        "{msg}"
                    )
                }
                other => panic!("unwrap after a refused PIN: {other:?}"),
            }
        }
    });
}

#[test]
fn reconnects_wait_for_the_backoff() {
    testing::in_own_process("reconnects_wait_for_the_backoff", |hsm| {
        let mut cfg = config(hsm, OBJECT, USER_PIN);
        cfg.reconnect_backoff = Duration::from_secs(3600);
        let (kek, _) = Pkcs11Kek::open_or_generate(cfg).unwrap();
        let wrapped = kek.wrap(&DataKey::generate(), &ctx(1)).unwrap();
        hsm.unplug();
        // The failing call breaks the pool; the next one tries once to reconnect and fails.
        assert!(kek.unwrap(&wrapped, &ctx(1)).is_err());
        assert!(kek.unwrap(&wrapped, &ctx(1)).is_err());
        hsm.plug();
        // Within the backoff nobody tries again: the token is back, the call still fails fast.
        match kek.unwrap(&wrapped, &ctx(1)) {
            Err(CryptoError::KeyUnavailable(msg)) => {
                assert!(msg.contains("reconnecting failed"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn debug_shows_the_uri_and_id_but_no_pin() {
    testing::in_own_process("debug_shows_the_uri_and_id_but_no_pin", |hsm| {
        let kek = generate(hsm, OBJECT);
        let shown = format!("{kek:?}");
        assert!(shown.contains("token=coffer"), "{shown}");
        assert!(shown.contains(&kek.current_kek_id().0), "{shown}");
        assert!(!shown.contains(USER_PIN), "{shown}");
    });
}
