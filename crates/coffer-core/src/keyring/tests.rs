use std::sync::Condvar;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use coffer_crypto::{CryptoError, FileKek, Plaintext, SealedValue, ValueContext, open, seal};
use coffer_storage::{AccountRecord, SqliteStorage};
use coffer_types::{SecretId, StoreId, Version};

use super::*;

/// A file KEK that counts its calls and, once armed, holds `wrap` until the gate opens (or five
/// seconds pass, which the test then sees as a failure).
#[derive(Debug)]
struct TestKek {
    inner: FileKek,
    wraps: AtomicUsize,
    unwraps: AtomicUsize,
    armed: AtomicBool,
    entered: AtomicBool,
    timed_out: AtomicBool,
    open: Mutex<bool>,
    opened: Condvar,
}

impl TestKek {
    fn counts(&self) -> (usize, usize) {
        (
            self.wraps.load(Ordering::SeqCst),
            self.unwraps.load(Ordering::SeqCst),
        )
    }

    fn open_gate(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

impl KekProvider for TestKek {
    fn current_kek_id(&self) -> KekId {
        self.inner.current_kek_id()
    }

    fn wrap(&self, key: &DataKey, ctx: &DekContext<'_>) -> Result<WrappedDataKey, CryptoError> {
        self.wraps.fetch_add(1, Ordering::SeqCst);
        if self.armed.load(Ordering::SeqCst) {
            self.entered.store(true, Ordering::SeqCst);
            let open = self.open.lock().unwrap();
            let (_open, wait) = self
                .opened
                .wait_timeout_while(open, Duration::from_secs(5), |open| !*open)
                .unwrap();
            if wait.timed_out() {
                self.timed_out.store(true, Ordering::SeqCst);
            }
        }
        self.inner.wrap(key, ctx)
    }

    fn unwrap(
        &self,
        wrapped: &WrappedDataKey,
        ctx: &DekContext<'_>,
    ) -> Result<DataKey, CryptoError> {
        self.unwraps.fetch_add(1, Ordering::SeqCst);
        self.inner.unwrap(wrapped, ctx)
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    kek: Arc<TestKek>,
    storage: Arc<dyn Storage>,
    account: AccountId,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let kek = Arc::new(TestKek {
        inner: FileKek::create(&dir.path().join("kek")).unwrap(),
        wraps: AtomicUsize::new(0),
        unwraps: AtomicUsize::new(0),
        armed: AtomicBool::new(false),
        entered: AtomicBool::new(false),
        timed_out: AtomicBool::new(false),
        open: Mutex::new(false),
        opened: Condvar::new(),
    });
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&dir.path().join("db")).unwrap());
    let account = new_account(&storage).await;
    Fixture {
        _dir: dir,
        kek,
        storage,
        account,
    }
}

async fn new_account(storage: &Arc<dyn Storage>) -> AccountId {
    let account = AccountId::from_bytes(random_id());
    storage
        .create_account(
            AccountRecord {
                id: account,
                name: "a".into(),
                created: Timestamp::now(),
                secrets_quota: None,
            },
            &[],
        )
        .await
        .unwrap();
    account
}

async fn keyring(f: &Fixture, policy: DekPolicy) -> Keyring {
    Keyring::open(f.kek.clone(), f.storage.clone(), policy)
        .await
        .unwrap()
}

/// What a successful write that used `key` leaves behind: its DEK stored.
async fn commit(f: &Fixture, key: &SealingKey) {
    if f.storage.get_dek(key.id).await.unwrap().is_none() {
        f.storage.put_dek(key.record.clone()).await.unwrap();
    }
}

fn ctx(account: AccountId, dek: DekId) -> ValueContext {
    ValueContext {
        account,
        store: StoreId::from_bytes([1; 16]),
        secret: SecretId::from_bytes([2; 16]),
        version: Version::FIRST,
        dek,
    }
}

#[tokio::test]
async fn reuses_a_dek_until_its_seal_budget_is_spent() {
    let f = fixture().await;
    let keys = keyring(
        &f,
        DekPolicy {
            max_age: Duration::from_secs(3600),
            max_seals: 3,
        },
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(keys.sealing_key(f.account).await.unwrap().id);
    }
    assert!(ids[..3].iter().all(|id| *id == ids[0]));
    assert!(ids[3..6].iter().all(|id| *id == ids[3]));
    assert_ne!(ids[0], ids[3]);
    assert_ne!(ids[3], ids[6]);
}

#[tokio::test]
async fn an_expired_dek_is_replaced() {
    let f = fixture().await;
    let keys = keyring(
        &f,
        DekPolicy {
            max_age: Duration::ZERO,
            max_seals: 1 << 20,
        },
    )
    .await;
    let a = keys.sealing_key(f.account).await.unwrap().id;
    let b = keys.sealing_key(f.account).await.unwrap().id;
    assert_ne!(a, b);
}

#[tokio::test]
async fn a_new_dek_is_returned_wrapped_and_not_stored() {
    let f = fixture().await;
    let keys = keyring(&f, DekPolicy::default()).await;
    let head = f.storage.change_head().await.unwrap();
    let sealing = keys.sealing_key(f.account).await.unwrap();
    assert_eq!(sealing.record.account_id, f.account);
    assert_eq!(sealing.record.key.id, sealing.id);
    assert_eq!(sealing.record.key.kek_id, keys.current_kek_id().0);
    assert_eq!(f.storage.get_dek(sealing.id).await.unwrap(), None);
    assert_eq!(
        f.storage.change_head().await.unwrap(),
        head,
        "the keyring writes nothing; the write that uses the DEK stores it"
    );
    // The record is the key, wrapped for this account and id.
    let unwrapped = f
        .kek
        .unwrap(
            &WrappedDataKey {
                kek_id: KekId(sealing.record.key.kek_id.clone()),
                bytes: sealing.record.key.wrapped.clone(),
            },
            &dek_context(f.account, sealing.id),
        )
        .unwrap();
    assert_eq!(unwrapped.expose_secret(), sealing.key.expose_secret());
}

#[tokio::test]
async fn accounts_never_share_a_dek_and_cannot_open_each_others() {
    let f = fixture().await;
    let other = new_account(&f.storage).await;
    let keys = keyring(&f, DekPolicy::default()).await;
    let mine = keys.sealing_key(f.account).await.unwrap();
    let theirs = keys.sealing_key(other).await.unwrap();
    assert_ne!(mine.id, theirs.id);
    commit(&f, &mine).await;
    commit(&f, &theirs).await;
    // A fresh keyring (empty cache) must refuse a DEK looked up under the wrong account.
    let fresh = keyring(&f, DekPolicy::default()).await;
    assert!(matches!(
        fresh.opening_key(f.account, theirs.id).await,
        Err(CoreError::Internal(_))
    ));
}

#[tokio::test]
async fn a_warm_cache_still_checks_the_owner() {
    let f = fixture().await;
    let other = new_account(&f.storage).await;
    let keys = keyring(&f, DekPolicy::default()).await;
    let mine = keys.sealing_key(f.account).await.unwrap();
    commit(&f, &mine).await;
    // The DEK is cached now (it was made here), so no lookup in storage happens.
    assert!(keys.opening_key(f.account, mine.id).await.is_ok());
    assert!(
        matches!(
            keys.opening_key(other, mine.id).await,
            Err(CoreError::Internal(_))
        ),
        "a cached DEK is only served to its own account"
    );
    assert!(keys.opening_key(f.account, mine.id).await.is_ok());
}

#[tokio::test]
async fn old_deks_still_open_after_rotation_and_restart() {
    let f = fixture().await;
    let value = Plaintext::new(b"rotate me".to_vec());
    let keys = keyring(
        &f,
        DekPolicy {
            max_age: Duration::from_secs(3600),
            max_seals: 1,
        },
    )
    .await;
    let first = keys.sealing_key(f.account).await.unwrap();
    let sealed = seal(&first.key, &ctx(f.account, first.id), &value).unwrap();
    commit(&f, &first).await;
    let second = keys.sealing_key(f.account).await.unwrap();
    commit(&f, &second).await;
    assert_ne!(first.id, second.id);
    drop(keys);

    // A new process: nothing cached, the DEK is unwrapped from storage through the KEK.
    let restarted = keyring(&f, DekPolicy::default()).await;
    let key = restarted.opening_key(f.account, first.id).await.unwrap();
    let opened = open(
        &key,
        &ctx(f.account, first.id),
        &SealedValue(sealed.0.clone()),
    )
    .unwrap();
    assert_eq!(opened.expose_secret(), b"rotate me");
    // And it keeps sealing with the newest DEK rather than making one per restart.
    let again = restarted.sealing_key(f.account).await.unwrap();
    assert_eq!(again.id, second.id);
    assert_eq!(again.record, second.record);
}

#[tokio::test]
async fn a_dek_made_for_a_failed_write_is_carried_again() {
    let f = fixture().await;
    let keys = keyring(&f, DekPolicy::default()).await;
    // The first write using the DEK failed, so nothing was stored: the next seal still
    // returns the record for the next write to carry.
    let first = keys.sealing_key(f.account).await.unwrap();
    let second = keys.sealing_key(f.account).await.unwrap();
    assert_eq!(second.id, first.id);
    assert_eq!(second.record, first.record);
}

#[tokio::test]
async fn kek_calls_happen_once_per_key() {
    let f = fixture().await;
    let keys = keyring(&f, DekPolicy::default()).await;
    assert_eq!(
        f.kek.counts(),
        (6, 6),
        "first open: the six instance keys (the MAC keys of API tokens, audit, service tokens and node tokens, the replication key and the feed-signing seed) are made (a wrap each) and read back (an unwrap each)"
    );
    let sealing = keys.sealing_key(f.account).await.unwrap();
    commit(&f, &sealing).await;
    for _ in 0..10 {
        keys.sealing_key(f.account).await.unwrap();
        keys.opening_key(f.account, sealing.id).await.unwrap();
    }
    assert_eq!(
        f.kek.counts(),
        (7, 6),
        "one wrap for the new DEK; it is cached, so opening it needs no unwrap"
    );

    let restarted = keyring(&f, DekPolicy::default()).await;
    assert_eq!(
        f.kek.counts(),
        (7, 12),
        "a later open unwraps the six stored instance keys once each and wraps nothing"
    );
    for _ in 0..10 {
        restarted.opening_key(f.account, sealing.id).await.unwrap();
    }
    assert_eq!(f.kek.counts(), (7, 13), "10 opens, one unwrap");
    assert_eq!(
        restarted.sealing_key(f.account).await.unwrap().id,
        sealing.id
    );
    assert_eq!(
        f.kek.counts(),
        (7, 13),
        "reusing the stored DEK for sealing is served from the cache too"
    );
}

#[test]
fn the_dek_cache_drops_its_oldest_entries_past_its_capacity() {
    let mut cache = DekCache::new(3);
    let account = AccountId::from_bytes([1; 16]);
    let ids: Vec<DekId> = (0..5u8).map(|n| DekId::from_bytes([n; 16])).collect();
    for id in &ids[..3] {
        cache.insert(account, *id, Arc::new(DataKey::generate()));
    }
    // Inserting a key already held changes nothing (and evicts nothing).
    cache.insert(account, ids[0], Arc::new(DataKey::generate()));
    assert_eq!(cache.len(), 3);
    for id in &ids[3..] {
        cache.insert(account, *id, Arc::new(DataKey::generate()));
    }
    assert_eq!(cache.len(), 3);
    assert!(cache.get(account, ids[0]).is_none());
    assert!(cache.get(account, ids[1]).is_none());
    assert!(ids[2..].iter().all(|id| cache.get(account, *id).is_some()));
    assert_eq!(cache.order.len(), cache.keys.len());
}

#[tokio::test]
async fn the_keyring_cache_is_bounded() {
    let f = fixture().await;
    let keys = keyring(
        &f,
        DekPolicy {
            max_age: Duration::from_secs(3600),
            max_seals: 1,
        },
    )
    .await;
    for _ in 0..DEK_CACHE_CAPACITY + 10 {
        keys.sealing_key(f.account).await.unwrap();
    }
    let cached = keys.cache.read().unwrap().len();
    assert_eq!(cached, DEK_CACHE_CAPACITY);
}

/// While one account's new DEK waits on a slow KEK, other accounts keep sealing: the KEK call
/// runs off the runtime's only thread and no lock is held across it.
#[tokio::test(flavor = "current_thread")]
async fn a_slow_kek_call_blocks_neither_the_runtime_nor_other_accounts() {
    let f = fixture().await;
    let other = new_account(&f.storage).await;
    let keys = Arc::new(keyring(&f, DekPolicy::default()).await);
    let warm = keys.sealing_key(other).await.unwrap();

    f.kek.armed.store(true, Ordering::SeqCst);
    let slow = tokio::spawn({
        let keys = Arc::clone(&keys);
        let account = f.account;
        async move { keys.sealing_key(account).await }
    });
    tokio::time::timeout(Duration::from_secs(10), async {
        while !f.kek.entered.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the KEK call started");

    let meanwhile = tokio::time::timeout(Duration::from_secs(2), keys.sealing_key(other))
        .await
        .expect("another account seals while a KEK call is in progress")
        .unwrap();
    assert_eq!(meanwhile.id, warm.id);
    f.kek.open_gate();
    let slow = slow.await.unwrap().unwrap();
    assert_ne!(slow.id, warm.id);
    assert!(
        !f.kek.timed_out.load(Ordering::SeqCst),
        "the KEK call was released by the test, not by its timeout: it did not block the runtime"
    );
}

#[tokio::test]
async fn mac_key_survives_restart_and_needs_the_right_kek() {
    let f = fixture().await;
    let token = coffer_crypto::Token::generate(coffer_types::TokenId::from_bytes([7; 16]));
    let hash = keyring(&f, DekPolicy::default())
        .await
        .token_mac()
        .hash_token(&token);
    assert!(
        keyring(&f, DekPolicy::default())
            .await
            .token_mac()
            .verify_token(token.presented(), &hash)
    );

    let other_dir = tempfile::tempdir().unwrap();
    let wrong: Arc<dyn KekProvider> =
        Arc::new(FileKek::create(&other_dir.path().join("kek")).unwrap());
    let err = Keyring::open(wrong, f.storage.clone(), DekPolicy::default())
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn node_mac_key_is_its_own_and_survives_restart() {
    let f = fixture().await;
    let id = coffer_types::TokenId::from_bytes([9; 16]);
    let node = coffer_crypto::Token::generate_kind(coffer_crypto::TokenKind::Node, id);
    let keys = keyring(&f, DekPolicy::default()).await;
    let hash = keys.node_mac().hash_token(&node);
    assert!(
        keyring(&f, DekPolicy::default())
            .await
            .node_mac()
            .verify_token(node.presented(), &hash),
        "the node-token key is stored (wrapped) and reloaded"
    );
    // Each key hashes differently: holding one verifies no token of another kind.
    assert_ne!(hash.0, keys.token_mac().hash_token(&node).0);
    assert_ne!(hash.0, keys.service_mac().hash_token(&node).0);
    assert_ne!(hash.0, keys.audit_mac().hash_token(&node).0);
    let stored = f
        .storage
        .get_instance_key("node-token-mac")
        .await
        .unwrap()
        .expect("stored under its purpose");
    for other in ["token-mac", "service-token-mac", "audit-mac"] {
        let key = f.storage.get_instance_key(other).await.unwrap().unwrap();
        assert_ne!(key.id, stored.id, "{other}");
        assert_ne!(key.wrapped, stored.wrapped, "{other}");
    }
}

/// The DEK gate (`gate.rs`): a write enters it only when it carries a DEK storage may not
/// hold, and only at `enter`, after every seal (so never across a KEK call), once however many
/// values it seals; once such a write committed, writes carrying the stored DEK never touch it.
#[tokio::test]
async fn only_writes_carrying_an_unstored_dek_enter_the_dek_gate() {
    let f = fixture().await;
    let keys = keyring(&f, DekPolicy::default()).await;
    let mut first = keys.dek_write();
    let a = first.seal(f.account).await.unwrap();
    let b = first.seal(f.account).await.unwrap();
    assert_eq!(a.id, b.id);
    first.carry(&a);
    first.carry(&b);
    assert!(
        keys.dek_gate.try_write().is_ok(),
        "sealing takes no hold: a DEK's KEK call is never made under it"
    );
    first.enter().await.unwrap();
    assert!(
        keys.dek_gate.try_write().is_err(),
        "the write carrying a new DEK holds the gate"
    );
    assert!(
        matches!(first.seal(f.account).await, Err(CoreError::Internal(_))),
        "no DEK is handed out after entering"
    );
    // Another write carrying the same, still unstored, DEK holds it too.
    let mut second = keys.dek_write();
    let c = second.seal(f.account).await.unwrap();
    assert_eq!(c.id, a.id);
    second.carry(&c);
    second.enter().await.unwrap();
    drop(first);
    assert!(
        keys.dek_gate.try_write().is_err(),
        "the second write still holds it"
    );
    commit(&f, &a).await;
    second.finish(&Ok::<(), ()>(()));
    assert!(keys.dek_gate.try_write().is_ok(), "both holds released");

    // While a revocation holds the gate, a write carrying a stored DEK does not wait for it.
    let closed = keys.close_dek_gate().await;
    let mut third = keys.dek_write();
    let d = third.seal(f.account).await.unwrap();
    assert_eq!(d.id, a.id);
    third.carry(&d);
    tokio::time::timeout(Duration::from_secs(10), third.enter())
        .await
        .expect("no wait for the gate")
        .unwrap();
    third.finish(&Ok::<(), ()>(()));
    drop(closed);
}

/// A write storage refused gives its hold back at `finish` (a write that kept it while it
/// waited for another lock would deadlock with a waiting revocation), and its DEK stays
/// unstored: the next write carrying it takes the gate again.
#[tokio::test]
async fn a_refused_write_gives_the_gate_back_and_its_dek_stays_unstored() {
    let f = fixture().await;
    let keys = keyring(&f, DekPolicy::default()).await;
    let mut write = keys.dek_write();
    let a = write.seal(f.account).await.unwrap();
    write.carry(&a);
    write.enter().await.unwrap();
    assert!(
        keys.dek_gate.try_write().is_err(),
        "held while storage works"
    );
    write.finish(&Err::<(), ()>(()));
    assert!(keys.dek_gate.try_write().is_ok(), "given back on a refusal");

    let mut next = keys.dek_write();
    let again = next.seal(f.account).await.unwrap();
    assert_eq!(again.id, a.id);
    next.carry(&again);
    next.enter().await.unwrap();
    assert!(
        keys.dek_gate.try_write().is_err(),
        "the refused write stored nothing: its DEK still takes the gate"
    );
    next.finish(&Ok::<(), ()>(()));
}

/// Only the DEKs a write carries are marked stored when it commits: a DEK it was handed but
/// did not carry (a reseal batch ends where its DEK runs out) still makes the next write that
/// carries it enter the gate.
#[tokio::test]
async fn a_dek_handed_out_but_not_carried_is_not_marked_stored() {
    let f = fixture().await;
    let policy = DekPolicy {
        max_seals: 2,
        ..DekPolicy::default()
    };
    let keys = keyring(&f, policy).await;
    let mut write = keys.dek_write();
    let a = write.seal(f.account).await.unwrap();
    assert_eq!(write.seal(f.account).await.unwrap().id, a.id);
    let b = write.seal(f.account).await.unwrap();
    assert_ne!(b.id, a.id, "a ran out of seals");
    write.carry(&a);
    write.enter().await.unwrap();
    commit(&f, &a).await;
    write.finish(&Ok::<(), ()>(()));

    let mut next = keys.dek_write();
    let again = next.seal(f.account).await.unwrap();
    assert_eq!(again.id, b.id);
    next.carry(&again);
    next.enter().await.unwrap();
    assert!(
        keys.dek_gate.try_write().is_err(),
        "b is not stored: the write carrying it holds the gate"
    );
}
