use std::os::unix::fs::PermissionsExt;

use coffer_types::{AccountId, DekId};

use super::*;

fn ctx() -> DekContext<'static> {
    DekContext {
        account: Some(AccountId::from_bytes([1; 16])),
        dek: DekId::from_bytes([2; 16]),
        purpose: "dek",
    }
}

/// A data dir as `coffer init` leaves it: `kek.key` and no record.
fn fresh_dir() -> (tempfile::TempDir, KekRing) {
    let dir = tempfile::tempdir().unwrap();
    FileKek::create(&dir.path().join(KEK_FILE)).unwrap();
    let ring = KekRing::open_files(dir.path()).unwrap();
    (dir, ring)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_dir_without_a_record_is_version_1() {
    let (dir, ring) = fresh_dir();
    let versions = ring.versions();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].version, 1);
    assert_eq!(versions[0].state, KekState::Active);
    assert_eq!(versions[0].provider, "file");
    let direct = FileKek::open(&dir.path().join(KEK_FILE)).unwrap();
    assert_eq!(ring.current_kek_id(), direct.current_kek_id());
    // Keys wrapped before versions existed open through the ring, and the reverse.
    let dek = DataKey::generate();
    let wrapped = direct.wrap(&dek, &ctx()).unwrap();
    assert_eq!(
        ring.unwrap(&wrapped, &ctx()).unwrap().expose_secret(),
        dek.expose_secret()
    );
    assert!(!dir.path().join(VERSIONS_FILE).exists());
}

#[test]
fn a_new_version_wraps_and_the_old_still_unwraps() {
    let (dir, ring) = fresh_dir();
    let dek = DataKey::generate();
    let old = ring.wrap(&dek, &ctx()).unwrap();
    let v1 = ring.current_kek_id();

    let v2 = ring.add_version().unwrap();
    assert_eq!(v2.version, 2);
    assert_ne!(v2.kek_id, v1);
    assert_eq!(ring.current_kek_id(), v2.kek_id);
    let path = dir.path().join("kek-2.key");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(fs::read(&path).unwrap().len(), 32);
    assert_eq!(mode(&dir.path().join(VERSIONS_FILE)), 0o600);
    let states: Vec<_> = ring
        .versions()
        .iter()
        .map(|v| (v.version, v.state))
        .collect();
    assert_eq!(states, vec![(1, KekState::Retiring), (2, KekState::Active)]);

    let new = ring.wrap(&dek, &ctx()).unwrap();
    assert_eq!(new.kek_id, v2.kek_id);
    for wrapped in [&old, &new] {
        assert_eq!(
            ring.unwrap(wrapped, &ctx()).unwrap().expose_secret(),
            dek.expose_secret()
        );
    }

    // The record brings back the same versions and states.
    let reopened = KekRing::open_files(dir.path()).unwrap();
    assert_eq!(reopened.versions(), ring.versions());
    assert_eq!(
        reopened.unwrap(&old, &ctx()).unwrap().expose_secret(),
        dek.expose_secret()
    );
    let text = fs::read_to_string(dir.path().join(VERSIONS_FILE)).unwrap();
    assert!(text.contains("active = 2"), "{text}");
    assert!(
        !text.contains(&hex::encode(fs::read(&path).unwrap())),
        "{text}"
    );
}

#[test]
fn retiring_records_first_then_removes_the_key() {
    let (dir, ring) = fresh_dir();
    let dek = DataKey::generate();
    let old = ring.wrap(&dek, &ctx()).unwrap();
    ring.add_version().unwrap();
    // Only a retiring version can be retired.
    assert!(ring.retire(2).is_err());
    ring.retire(1).unwrap();
    assert!(!dir.path().join(KEK_FILE).exists());
    let states: Vec<_> = ring.versions().iter().map(|v| v.state).collect();
    assert_eq!(states, vec![KekState::Retired, KekState::Active]);
    match ring.unwrap(&old, &ctx()) {
        Err(CryptoError::KeyUnavailable(msg)) => {
            assert!(msg.contains("was retired"), "{msg}");
            assert!(msg.contains(&old.kek_id.0), "{msg}");
        }
        other => panic!("expected KeyUnavailable, got {other:?}"),
    }
    // A data dir whose only remaining key is kek-2.key opens as the record says.
    let reopened = KekRing::open_files(dir.path()).unwrap();
    assert_eq!(reopened.versions(), ring.versions());
    assert_eq!(reopened.current_kek_id(), ring.current_kek_id());
}

#[test]
fn a_crash_between_record_and_unlink_is_finished_at_open() {
    let (dir, ring) = fresh_dir();
    let bytes = fs::read(dir.path().join(KEK_FILE)).unwrap();
    ring.add_version().unwrap();
    ring.retire(1).unwrap();
    // As if the process died after writing the record and before the unlink.
    fs::write(dir.path().join(KEK_FILE), &bytes).unwrap();
    fs::set_permissions(dir.path().join(KEK_FILE), fs::Permissions::from_mode(0o600)).unwrap();
    KekRing::open_files(dir.path()).unwrap();
    assert!(!dir.path().join(KEK_FILE).exists());
}

#[test]
fn an_unrecorded_key_file_is_replaced_by_the_next_rotation() {
    let (dir, ring) = fresh_dir();
    // A rotation that died after creating its file and before recording it.
    let stray = FileKek::create(&dir.path().join("kek-2.key")).unwrap();
    let reopened = KekRing::open_files(dir.path()).unwrap();
    assert_eq!(reopened.versions().len(), 1);
    let v2 = reopened.add_version().unwrap();
    assert_eq!(v2.version, 2);
    assert_ne!(v2.kek_id, stray.current_kek_id());
    drop(ring);
}

#[test]
fn a_record_that_does_not_match_the_files_is_refused_by_name() {
    let (dir, ring) = fresh_dir();
    ring.add_version().unwrap();
    let path = dir.path().join("kek-2.key");
    fs::remove_file(&path).unwrap();
    FileKek::create(&path).unwrap();
    let msg = KekRing::open_files(dir.path()).err().unwrap();
    assert!(msg.contains("kek-2.key is KEK"), "{msg}");
    assert!(msg.contains(VERSIONS_FILE), "{msg}");
    fs::remove_file(&path).unwrap();
    let msg = KekRing::open_files(dir.path()).err().unwrap();
    assert!(msg.contains("KEK version 2"), "{msg}");

    let record = dir.path().join(VERSIONS_FILE);
    for (text, expect) in [
        ("format = 9\nactive = 1\nversions = []\n", "format 9"),
        (
            "format = 1\nactive = 1\nversions = []\n",
            "exactly one version",
        ),
        ("format = 1\nactive = 1\n", "is not valid"),
        (
            "format = 1\nactive = 1\n[[versions]]\nversion = 1\nkek_id = \"x\"\nstate = \"odd\"\ncreated = \"2026-01-01T00:00:00Z\"\n",
            "unknown state",
        ),
    ] {
        fs::write(&record, text).unwrap();
        let msg = KekRing::open_files(dir.path()).err().unwrap();
        assert!(msg.contains(expect), "{text}: {msg}");
    }
}

#[test]
fn an_unknown_kek_id_is_key_unavailable_naming_the_versions() {
    let (_dir, ring) = fresh_dir();
    let other_dir = tempfile::tempdir().unwrap();
    let other = FileKek::create(&other_dir.path().join("k")).unwrap();
    let wrapped = other.wrap(&DataKey::generate(), &ctx()).unwrap();
    match ring.unwrap(&wrapped, &ctx()) {
        Err(CryptoError::KeyUnavailable(msg)) => {
            assert!(msg.contains("is not one of its versions"), "{msg}");
            assert!(msg.contains(&ring.current_kek_id().0), "{msg}");
        }
        other => panic!("expected KeyUnavailable, got {other:?}"),
    }
    // Relabelled with the ring's id, the wrong key's bytes are the one opaque error.
    let relabelled = WrappedDataKey {
        kek_id: ring.current_kek_id(),
        ..wrapped
    };
    assert!(matches!(
        ring.unwrap(&relabelled, &ctx()),
        Err(CryptoError::Opaque)
    ));
}

thread_local! {
    /// Makes `sync_dir` fail on this thread (tests run one per thread).
    pub(super) static FAIL_DIR_SYNC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn failing_dir_sync<T>(f: impl FnOnce() -> T) -> T {
    FAIL_DIR_SYNC.with(|c| c.set(true));
    let out = f();
    FAIL_DIR_SYNC.with(|c| c.set(false));
    out
}

#[test]
fn a_record_not_synced_after_its_rename_makes_no_change_and_keeps_the_key() {
    let (dir, ring) = fresh_dir();
    let dek = DataKey::generate();
    let v1 = ring.current_kek_id();
    // The rename happens, the directory sync fails: nothing wraps with version 2, and its key
    // file stays (the record on disk may name it).
    let err = failing_dir_sync(|| ring.add_version()).unwrap_err();
    assert!(
        matches!(&err, CoreError::Unavailable(m) if m.contains("could not sync")),
        "{err:?}"
    );
    assert_eq!(ring.current_kek_id(), v1);
    assert_eq!(ring.wrap(&dek, &ctx()).unwrap().kek_id, v1);
    assert!(dir.path().join("kek-2.key").exists());
    // A restart reads whichever record survived; here the new one, and both keys are there.
    let reopened = KekRing::open_files(dir.path()).unwrap();
    assert_eq!(reopened.versions().len(), 2);
    // The next change writes the record again, and works.
    let v2 = ring.add_version().unwrap();
    assert_eq!(ring.current_kek_id(), v2.kek_id);

    // Retiring: the record's sync fails, so the key is not removed and the version stays
    // retiring here; the next attempt retires it.
    let err = failing_dir_sync(|| ring.retire(1)).unwrap_err();
    assert!(matches!(err, CoreError::Unavailable(_)), "{err:?}");
    assert!(dir.path().join(KEK_FILE).exists());
    assert_eq!(ring.versions()[0].state, KekState::Retiring);
    ring.retire(1).unwrap();
    assert!(!dir.path().join(KEK_FILE).exists());
    assert_eq!(ring.versions()[0].state, KekState::Retired);
}

#[test]
fn a_record_of_a_file_kek_naming_a_token_object_is_refused() {
    let (dir, ring) = fresh_dir();
    ring.add_version().unwrap();
    let record = dir.path().join(VERSIONS_FILE);
    let text = fs::read_to_string(&record).unwrap().replacen(
        "version = 2\n",
        "version = 2\nuri = \"pkcs11:token=t;object=o?module-path=/m.so\"\n",
        1,
    );
    fs::write(&record, text).unwrap();
    let msg = KekRing::open_files(dir.path()).err().unwrap();
    assert!(msg.contains("names a PKCS#11 key object"), "{msg}");
}

#[test]
fn a_pkcs11_record_left_unsure_stops_using_the_new_object_and_the_next_rotation_works() {
    use coffer_hsm::testing::{self, OBJECT, USER_PIN};
    use coffer_hsm::{Pin, Pkcs11Config};
    testing::in_own_process(
        "kek_versions::tests::a_pkcs11_record_left_unsure_stops_using_the_new_object_and_the_next_rotation_works",
        |hsm| {
            let uri = Pkcs11Uri::parse(&hsm.uri_for(testing::TOKEN, OBJECT)).unwrap();
            let pin =
                Pin::resolve(&uri, Some(zeroize::Zeroizing::new(USER_PIN.to_owned()))).unwrap();
            let mut config = Pkcs11Config::new(uri.clone(), pin);
            config.reconnect_backoff = std::time::Duration::ZERO;
            let (kek, _) = Pkcs11Kek::open_or_generate(config).unwrap();
            let kek = Arc::new(kek);
            let dir = tempfile::tempdir().unwrap();
            let ring = KekRing::single_pkcs11(dir.path(), kek.clone(), uri, Timestamp::now());
            let v1 = ring.current_kek_id();

            let err = failing_dir_sync(|| ring.add_version()).unwrap_err();
            assert!(matches!(err, CoreError::Unavailable(_)), "{err:?}");
            assert_eq!(ring.current_kek_id(), v1);
            // The object the record may name stays in the token, unused by this process.
            let made: Vec<_> = kek.objects();
            assert_eq!(made.len(), 1, "{made:?}");
            assert_eq!(made[0].kek_id, v1);

            // The next rotation makes another object under the same label and works.
            let v2 = ring.add_version().unwrap();
            assert_ne!(v2.kek_id, v1);
            assert_eq!(ring.current_kek_id(), v2.kek_id);
            let dek = DataKey::generate();
            assert_eq!(ring.wrap(&dek, &ctx()).unwrap().kek_id, v2.kek_id);
            let objects = kek.objects();
            assert_eq!(objects.len(), 2, "{objects:?}");
            assert_eq!(objects[1].label, format!("{OBJECT}.v2"));
        },
    );
}
