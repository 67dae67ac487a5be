//! Account replication keys in the keyring: a revocation rotates what it can and owes the
//! rest, a deleted account's key stays forgotten, and an account with a KEK of its own never
//! seals under a DEK its replication key does not wrap.

use std::sync::atomic::{AtomicBool, Ordering};

use coffer_crypto::{FileKek, Grant, NodeKey, ark_unwrap, random_id};
use coffer_storage::{AccountRecord, NodeRecord, SqliteStorage, Storage};
use coffer_types::{AccountId, Timestamp, TokenId};

use super::*;
use crate::DekPolicy;
use crate::account_kek::AccountKekInfo;
use crate::keyring::gate::StaleDeks;
use crate::test_keks::FlakyKek;

struct Fixture {
    dir: tempfile::TempDir,
    storage: Arc<dyn Storage>,
    keys: Keyring,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let kek: Arc<dyn KekProvider> = Arc::new(FileKek::create(&dir.path().join("kek")).unwrap());
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&dir.path().join("db")).unwrap());
    storage.ensure_cluster_id().await.unwrap();
    let keys = Keyring::open(kek, storage.clone(), DekPolicy::default())
        .await
        .unwrap();
    Fixture { dir, storage, keys }
}

impl Fixture {
    async fn account(&self, name: &str) -> AccountId {
        let id = AccountId::from_bytes(random_id());
        self.storage
            .create_account(
                AccountRecord {
                    id,
                    name: name.into(),
                    created: Timestamp::now(),
                    secrets_quota: None,
                },
                &[],
            )
            .await
            .unwrap();
        id
    }

    /// Gives `account` a KEK of its own (registered, and its ARK made).
    async fn own_kek(&self, account: AccountId, name: &str) -> Arc<FlakyKek> {
        let kek = Arc::new(FlakyKek {
            inner: FileKek::create(&self.dir.path().join(name)).unwrap(),
            failing: AtomicBool::new(false),
            unwraps_while_failing: false,
        });
        self.keys.ensure_ark(account, kek.clone()).await.unwrap();
        let info = AccountKekInfo {
            kek_id: kek.current_kek_id(),
            provider: "file".into(),
            location: name.into(),
        };
        self.keys
            .account_keks()
            .insert(account, info, Ok(kek.clone() as Arc<dyn KekProvider>));
        kek
    }

    /// A node with a node key registered; its keys.
    async fn node(&self, name: &str) -> (TokenId, NodeKey) {
        let id = TokenId::from_bytes(random_id());
        self.storage
            .create_node(
                NodeRecord {
                    id,
                    name: name.into(),
                    hash: [7; 32],
                    created: Timestamp::now(),
                    revoked: None,
                },
                &[],
            )
            .await
            .unwrap();
        let key = NodeKey::create(&self.dir.path().join(format!("{name}.node"))).unwrap();
        self.keys
            .register_node_key(id, key.public_key(), &[])
            .await
            .unwrap();
        (id, key)
    }

    /// `node`'s key for `account`, registered.
    async fn account_key(&self, node: TokenId, account: AccountId, name: &str) -> NodeKey {
        let key = NodeKey::create(&self.dir.path().join(format!("{name}.account"))).unwrap();
        assert!(
            self.keys
                .register_node_account_key(node, account, key.public_key(), &[])
                .await
                .unwrap()
        );
        key
    }

    /// Seals one value of `account` and stores its DEK, as a write would.
    async fn seal(&self, account: AccountId) -> DekRecord {
        let key = self.keys.sealing_key(account).await.unwrap();
        if self.storage.get_dek(key.id).await.unwrap().is_none() {
            self.storage.put_dek(key.record.clone()).await.unwrap();
        }
        key.record
    }

    /// ARK `version` of `account` as `node` opens it from its grant with both of its keys.
    async fn granted(
        &self,
        account: AccountId,
        version: u32,
        node: TokenId,
        keys: (&NodeKey, &NodeKey),
    ) -> Option<DataKey> {
        let grants = self.storage.account_grants(account, version).await.unwrap();
        let grant = grants.iter().find(|g| g.node_id == node)?;
        let grant = Grant {
            ephemeral_public: grant.ephemeral_public,
            sealed: grant.sealed.clone(),
        };
        keys.0
            .open_account_grant(keys.1, node, account, version, &grant)
            .ok()
    }

    async fn stored_version(&self, account: AccountId) -> u32 {
        self.storage
            .account_replication_key_versions(account)
            .await
            .unwrap()
            .last()
            .unwrap()
            .0
    }
}

/// One account's KEK failing during a revocation neither stops it nor rolls back the other
/// accounts' rotations; the failing account writes nothing meanwhile, is audited, and is
/// rotated (with grants to the remaining node only) once its KEK works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_account_kek_is_left_out_of_a_revocation_and_rotated_when_it_is_back() {
    let f = fixture().await;
    let (healthy, flaky) = (f.account("healthy").await, f.account("flaky").await);
    f.own_kek(healthy, "healthy.kek").await;
    let flaky_kek = f.own_kek(flaky, "flaky.kek").await;
    let (n, n_key) = f.node("n").await;
    let (m, m_key) = f.node("m").await;
    for account in [healthy, flaky] {
        f.account_key(n, account, &format!("n-{account}")).await;
    }
    let m_flaky = f.account_key(m, flaky, "m-flaky").await;
    f.account_key(m, healthy, "m-healthy").await;
    let sealed = f.seal(flaky).await;
    f.seal(healthy).await;

    flaky_kek.failing.store(true, Ordering::SeqCst);
    f.keys
        .revoke_node(n, Timestamp::now(), &[])
        .await
        .expect("one account's failing KEK does not stop the revocation");
    assert_eq!(f.stored_version(healthy).await, 2, "rotated");
    assert_eq!(f.keys.account_replication_key_version(healthy), Some(2));
    assert_eq!(f.stored_version(flaky).await, 1, "left out");
    assert_eq!(
        f.storage.accounts_owing_ark_rotation().await.unwrap(),
        vec![flaky]
    );
    // Nothing of it is written under the version the revoked node holds.
    assert_eq!(f.keys.account_replication_key_version(flaky), None);
    flaky_kek.failing.store(false, Ordering::SeqCst);
    assert!(f.keys.sealing_key(flaky).await.is_err());
    let audit = f.storage.audit_entries(flaky, 0, 100).await.unwrap();
    let deferred = audit
        .iter()
        .find(|r| r.entry.action == "rotate_replication_key")
        .expect("the left-out rotation is audited in the account's log");
    assert_eq!(deferred.entry.outcome, "failure");
    let payload = String::from_utf8(deferred.entry.payload.clone()).unwrap();
    assert!(payload.contains(&n.to_string()), "{payload}");
    // The tenant's log says what happened in fixed words, never the provider's error.
    assert!(payload.contains(LEFT_OUT_UNREACHABLE), "{payload}");
    assert!(!payload.contains("the test's KEK is failing"), "{payload}");

    // The next catch-up (the lifecycle job's pass) makes the owed rotation.
    f.keys.catch_up_arks().await.unwrap();
    assert_eq!(f.stored_version(flaky).await, 2);
    assert_eq!(f.keys.account_replication_key_version(flaky), Some(2));
    assert!(
        f.storage
            .accounts_owing_ark_rotation()
            .await
            .unwrap()
            .is_empty()
    );
    let next = f
        .granted(flaky, 2, m, (&m_flaky, &m_key))
        .await
        .expect("the remaining node is granted the new version");
    assert!(
        f.storage
            .account_grants(flaky, 2)
            .await
            .unwrap()
            .iter()
            .all(|g| g.node_id != n),
        "the revoked node is granted nothing"
    );
    assert!(f.granted(flaky, 2, n, (&m_flaky, &n_key)).await.is_none());
    let rewrapped = f.storage.get_dek(sealed.key.id).await.unwrap().unwrap();
    let rk = rewrapped.rk.unwrap();
    assert!(rk.ark && rk.version == 2, "{rk:?}");
    ark_unwrap(&next, 2, &rk.wrapped, &dek_context(flaky, sealed.key.id)).unwrap();
    let caught_up = f
        .storage
        .audit_entries(flaky, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.action == "rotate_replication_key")
        .map(|r| r.entry.outcome)
        .collect::<Vec<_>>();
    assert_eq!(caught_up, ["failure", "success"]);
    // It writes again, under the new version.
    let after = f.seal(flaky).await;
    assert_eq!(after.rk.map(|rk| (rk.ark, rk.version)), Some((true, 2)));
}

/// A revocation after an account's delete committed (before the process forgot its key) does
/// not fail on the deleted account and rotates only the others; a rotation installed after the
/// delete's forget does not bring the deleted account's replication key back into memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_skips_a_deleted_account_and_a_late_install_does_not_bring_its_key_back() {
    let f = fixture().await;
    let (gone, kept) = (f.account("gone").await, f.account("kept").await);
    f.own_kek(gone, "gone.kek").await;
    f.own_kek(kept, "kept.kek").await;
    let (n, _) = f.node("n").await;
    f.node("m").await;
    f.account_key(n, gone, "n-gone").await;
    f.seal(gone).await;
    // The delete has committed; the process has not forgotten the key yet.
    f.storage.delete_account(gone, &[]).await.unwrap();
    f.keys
        .revoke_node(n, Timestamp::now(), &[])
        .await
        .expect("a deleted account is not part of the rotation");
    assert_eq!(f.stored_version(kept).await, 2);
    assert!(
        f.storage
            .account_replication_key_versions(gone)
            .await
            .unwrap()
            .is_empty(),
        "nothing stored for the deleted account"
    );
    // A rotation's install after the delete's forget: the key stays forgotten.
    f.keys.forget_deleted_account(gone);
    f.keys
        .install_ark_rotations(vec![(gone, 3, Arc::new(DataKey::generate()))]);
    assert_eq!(f.keys.account_replication_key_version(gone), None);
}

/// An account whose KEK is in use but whose replication key is not open makes no DEK: one
/// under the instance RK would outlive the account's deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_kek_without_its_replication_key_seals_nothing() {
    let f = fixture().await;
    let account = f.account("a").await;
    let kek = Arc::new(FlakyKek {
        inner: FileKek::create(&f.dir.path().join("a.kek")).unwrap(),
        failing: AtomicBool::new(false),
        unwraps_while_failing: false,
    });
    let info = AccountKekInfo {
        kek_id: kek.current_kek_id(),
        provider: "file".into(),
        location: "a.kek".into(),
    };
    f.keys
        .account_keks()
        .insert(account, info, Ok(kek.clone() as Arc<dyn KekProvider>));
    let err = f.keys.sealing_key(account).await.unwrap_err();
    assert!(matches!(err, CoreError::Unavailable(_)), "{err:?}");
    assert!(f.storage.latest_dek(account).await.unwrap().is_none());
    f.keys.ensure_ark(account, kek).await.unwrap();
    let record = f.seal(account).await;
    assert_eq!(record.rk.map(|rk| (rk.ark, rk.version)), Some((true, 1)));
}

#[test]
fn storage_and_crypto_name_ark_wraps_alike() {
    // Storage does not depend on crypto, so each has the `ark:` prefix; they must agree, or an
    // edge would not recognise the wraps the feed carries.
    assert_eq!(
        coffer_storage::ARK_KEK_ID_PREFIX,
        coffer_crypto::ARK_KEK_ID_PREFIX
    );
    assert_eq!(
        coffer_storage::ark_kek_id(7),
        coffer_crypto::ark_kek_id(7).0
    );
    assert_eq!(
        coffer_crypto::ark_version_of(&coffer_storage::ark_kek_id(7)),
        Some(7)
    );
}

/// The tenant's log names the kind of failure that left its account out of a revocation, in
/// one of a few fixed phrases, whatever the error's own text.
#[test]
fn a_left_out_rotation_is_explained_by_kind_in_fixed_words() {
    let account = AccountId::from_bytes([3; 16]);
    let missing = crate::account_kek::AccountKeks::unavailable(
        account,
        &coffer_crypto::KekId("file:secret-path".into()),
    );
    assert_eq!(left_out_reason(&missing), LEFT_OUT_MISSING);
    let hsm = CoreError::Unavailable("slot 3 label coffer-acct: CKR_DEVICE_ERROR".into());
    assert_eq!(left_out_reason(&hsm), LEFT_OUT_UNREACHABLE);
    let other = CoreError::Internal("a DEK failed to open".into());
    assert_eq!(left_out_reason(&other), LEFT_OUT_OTHER);
    assert_ne!(LEFT_OUT_MISSING, LEFT_OUT_UNREACHABLE);
    for phrase in [LEFT_OUT_MISSING, LEFT_OUT_UNREACHABLE, LEFT_OUT_OTHER] {
        assert!(!phrase.contains("secret-path") && !phrase.contains("CKR_"));
    }
}

/// A revocation waits at the DEK gate for a write that carries a DEK not stored yet, after
/// preparing the new ARK versions; an account deleted meanwhile is skipped when it goes on,
/// not a reason to fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_waits_for_writes_holding_the_gate_and_skips_an_account_deleted_meanwhile() {
    let f = Arc::new(fixture().await);
    let (gone, kept) = (f.account("gone").await, f.account("kept").await);
    f.own_kek(gone, "gone.kek").await;
    f.own_kek(kept, "kept.kek").await;
    let (n, _) = f.node("n").await;
    f.node("m").await;
    f.account_key(n, gone, "n-gone").await;
    f.seal(gone).await;

    // A write in flight: it carries a DEK storage does not hold yet, so it holds the gate.
    let mut write = f.keys.dek_write();
    let carried = write.seal(kept).await.unwrap();
    let record = write.carry(&carried);
    write.enter().await.unwrap();
    let revocation = tokio::spawn({
        let f = Arc::clone(&f);
        async move { f.keys.revoke_node(n, Timestamp::now(), &[]).await }
    });
    // The revocation has made its slow part and asks for the gate: from then on, no write is
    // let in ahead of it (a fair lock).
    let mut polls = 0;
    while Arc::clone(&f.keys.dek_gate).try_read_owned().is_ok() {
        polls += 1;
        assert!(polls < 1_000_000, "the revocation never asked for the gate");
        assert!(!revocation.is_finished(), "{:?}", revocation.await);
        tokio::task::yield_now().await;
    }
    assert!(!revocation.is_finished(), "it waits for the write");
    // A write that needs a new DEK now makes it at once (no hold, so its KEK call waits for
    // nothing), but cannot enter the gate ahead of the queued revocation.
    f.keys.lock_active().remove(&kept);
    let mut late = f.keys.dek_write();
    let late_key = late.seal(kept).await.unwrap();
    assert_ne!(late_key.id, carried.id, "a new DEK");
    late.carry(&late_key);
    let mut entering = std::pin::pin!(late.enter());
    assert!(
        std::future::poll_fn(|cx| std::task::Poll::Ready(entering.as_mut().poll(cx)))
            .await
            .is_pending(),
        "a write carrying a new DEK waits behind the queued revocation"
    );
    f.storage.delete_account(gone, &[]).await.unwrap();
    // The write commits, then releases the gate.
    f.storage.put_dek(record).await.unwrap();
    write.finish(&Ok::<(), ()>(()));
    revocation
        .await
        .unwrap()
        .expect("the deleted account is skipped");
    assert_eq!(f.stored_version(kept).await, 2);
    let rk = f
        .storage
        .get_dek(carried.id)
        .await
        .unwrap()
        .unwrap()
        .rk
        .unwrap();
    assert!(
        rk.ark && rk.version == 2,
        "the write's DEK is rotated too: {rk:?}"
    );
    // The late write's DEK was made under the replaced ARK version: it seals again.
    assert_eq!(entering.await, Err(StaleDeks));
    let mut again = f.keys.dek_write();
    let key = again.seal(kept).await.unwrap();
    assert!(f.keys.made_under_current_rk(&again.carry(&key)));
    again.enter().await.unwrap();
}

/// A write cancelled after its job reached the storage writer has given up its hold, so its
/// DEK can be stored after a revocation's listing: that commit is refused, and the next
/// attempt lists the DEK and rotates it (`keyring/gate.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dek_a_cancelled_write_stores_after_the_listing_is_rotated_by_the_next_attempt() {
    let f = Arc::new(fixture().await);
    let account = f.account("a").await;
    let (n, _) = f.node("n").await;
    f.node("m").await;
    // Another account's DEK, stored before: the first listing is not empty.
    let other = f.account("b").await;
    f.seal(other).await;

    // A write carrying a new DEK of the account.
    let mut write = f.keys.dek_write();
    let key = write.seal(account).await.unwrap();
    assert!(
        f.storage.get_dek(key.id).await.unwrap().is_none(),
        "a new DEK"
    );
    let record = write.carry(&key);
    write.enter().await.unwrap();
    let (listed_tx, listed) = tokio::sync::oneshot::channel();
    let (go, go_rx) = tokio::sync::oneshot::channel();
    *f.keys.after_listing.lock().unwrap() = Some((listed_tx, go_rx));
    let revocation = tokio::spawn({
        let f = Arc::clone(&f);
        async move { f.keys.revoke_node(n, Timestamp::now(), &[]).await }
    });
    let mut polls = 0;
    while !f.keys.dek_gate_wanted() {
        polls += 1;
        assert!(polls < 1_000_000, "the revocation never asked for the gate");
        tokio::task::yield_now().await;
    }
    // The write is cancelled: its hold is gone, its job still queued at the storage writer.
    drop(write);
    listed.await.unwrap();
    // The queued job commits after the listing.
    f.storage.put_dek(record).await.unwrap();
    go.send(()).unwrap();
    revocation
        .await
        .unwrap()
        .expect("the next attempt lists the DEK");
    let rk = f
        .storage
        .get_dek(key.id)
        .await
        .unwrap()
        .unwrap()
        .rk
        .unwrap();
    assert_eq!(rk.version, 2, "the late DEK is rotated: {rk:?}");
}
