//! A node's revocation under DEK churn: writes that each make a new DEK, run concurrently
//! and without pause, never make the revocation's rotation fail (`keyring/gate.rs`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use coffer_crypto::{FileKek, NodeKey};
use coffer_storage::SqliteStorage;
use coffer_types::NodeName;

use super::*;
use crate::Comment;
use crate::CreateSecretItem;
use coffer_crypto::Plaintext;
use coffer_types::{Scopes, SecretName, StoreName};

/// Writers churning DEKs, each in its own store.
const CHURNERS: usize = 6;
/// Upper bound of each writer's loop, so the test ends whatever happens.
const MAX_WRITES: usize = 2_000;

fn item(name: String) -> CreateSecretItem {
    CreateSecretItem {
        name: SecretName::parse(&name).unwrap(),
        value: Plaintext::new(b"v".to_vec()),
        scopes: Scopes::default(),
        comment: Comment::default(),
    }
}

/// Every seal makes a new DEK (a budget of one seal each): six writers creating secrets (and
/// one of them deleting and re-creating its store, which gives up the account's DEK too) keep
/// new DEKs reaching storage while a node is revoked. The revocation succeeds, the writes all
/// succeed, and every DEK is under the new replication key afterwards. Before the DEK gate,
/// each of three attempts met a DEK stored between its listing and its commit. A stress test:
/// with attempts now going on while listings progress (at most 16), it can pass by luck
/// without the gate; the deterministic ones are in `keyring/tests.rs` and
/// `keyring/account_replication/tests.rs` (a write behind a queued revocation waits, a late
/// DEK is rotated by the next attempt).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_is_not_starved_by_writes_making_new_deks() {
    let dir = tempfile::tempdir().unwrap();
    let kek: Arc<dyn KekProvider> = Arc::new(FileKek::create(&dir.path().join("kek")).unwrap());
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&dir.path().join("db")).unwrap());
    let policy = DekPolicy {
        max_age: Duration::from_secs(3600),
        max_seals: 1,
    };
    let coffer = Arc::new(
        Coffer::open(storage, kek, Limits::default(), policy)
            .await
            .unwrap(),
    );
    let (account, token) = coffer.bootstrap("acme").await.unwrap();
    let op = coffer
        .authenticate(token.expose_secret(), Default::default())
        .await
        .unwrap();
    // Two nodes with keys: one revoked, one kept (granted the new key).
    let mut nodes = Vec::new();
    for n in ["e1", "e2"] {
        let (node, _) = coffer
            .create_node(&op, NodeName::parse(n).unwrap())
            .await
            .unwrap();
        let key = NodeKey::create(&dir.path().join(format!("{n}.key"))).unwrap();
        let public = hex::encode(key.public_key().as_bytes());
        assert!(coffer.register_node_key(&node, &public).await.unwrap());
        nodes.push(node);
    }
    // Some DEKs stored before, so that the rotation has work between listing and commit.
    let seed = coffer
        .create_store(&op, account, StoreName::parse("seed").unwrap())
        .await
        .unwrap()
        .id;
    coffer
        .create_secrets(
            &op,
            account,
            seed,
            (0..200).map(|i| item(format!("S{i}"))).collect(),
        )
        .await
        .unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicUsize::new(0));
    let mut churners = Vec::new();
    for c in 0..CHURNERS {
        let (coffer, op, done, writes) = (
            Arc::clone(&coffer),
            op.clone(),
            Arc::clone(&done),
            Arc::clone(&writes),
        );
        churners.push(tokio::spawn(async move {
            let name = StoreName::parse(&format!("churn-{c}")).unwrap();
            let mut store = coffer
                .create_store(&op, account, name.clone())
                .await
                .unwrap()
                .id;
            for i in 0..MAX_WRITES {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                // The first writer also deletes its store and makes it again now and then.
                if c == 0 && i % 5 == 4 {
                    coffer
                        .delete_store(&op, account, store, true)
                        .await
                        .map_err(|e| format!("delete store: {e}"))?;
                    store = coffer
                        .create_store(&op, account, name.clone())
                        .await
                        .map_err(|e| format!("create store: {e}"))?
                        .id;
                }
                coffer
                    .create_secrets(&op, account, store, vec![item(format!("K{i}"))])
                    .await
                    .map_err(|e| format!("write {i} of writer {c}: {e}"))?;
                writes.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<(), String>(())
        }));
    }
    // The writers are under way (bounded: they stop after MAX_WRITES each).
    while writes.load(Ordering::SeqCst) < 2 * CHURNERS && !churners.iter().all(|c| c.is_finished())
    {
        tokio::task::yield_now().await;
    }
    let before = writes.load(Ordering::SeqCst);
    let revoked = coffer.revoke_node(&op, nodes[0].id).await;
    // The churn overlapped the revocation: writers were still running when it returned (none
    // had reached its bound), and writes went on after it, under the new keys.
    let running = churners.iter().filter(|c| !c.is_finished()).count();
    let during = writes.load(Ordering::SeqCst);
    let mut polls = 0;
    while writes.load(Ordering::SeqCst) < during + CHURNERS {
        polls += 1;
        assert!(polls < 10_000_000, "no write after the revocation");
        tokio::task::yield_now().await;
    }
    done.store(true, Ordering::SeqCst);
    for churner in churners {
        churner.await.unwrap().unwrap();
    }
    revoked.expect("the revocation succeeds while new DEKs are being made");
    assert!(before >= 2 * CHURNERS, "writers under way before it");
    assert!(running > 0, "writers were still writing when it returned");
    assert_eq!(coffer.keys.replication_key_version(), Some(2));
    for dek in coffer.storage().list_deks().await.unwrap() {
        let rk = dek.rk.expect("every DEK has an RK wrap");
        assert_eq!(rk.version, 2, "DEK {} is under the new RK", dek.key.id);
    }
}

/// A node key stored that no longer parses (a non-canonical encoding an older build accepted)
/// cannot be sealed to: a revocation's rotation fails naming that node, which the operator
/// then revokes (its key is skipped from then on, and the first revocation goes through).
#[tokio::test]
async fn a_stored_node_key_that_does_not_parse_names_the_node_to_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let kek: Arc<dyn KekProvider> = Arc::new(FileKek::create(&dir.path().join("kek")).unwrap());
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&dir.path().join("db")).unwrap());
    let coffer = Coffer::open(
        Arc::clone(&storage),
        kek,
        Limits::default(),
        DekPolicy::default(),
    )
    .await
    .unwrap();
    let (_, token) = coffer.bootstrap("acme").await.unwrap();
    let op = coffer
        .authenticate(token.expose_secret(), Default::default())
        .await
        .unwrap();
    let (good, _) = coffer
        .create_node(&op, NodeName::parse("good").unwrap())
        .await
        .unwrap();
    let key = NodeKey::create(&dir.path().join("good.key")).unwrap();
    let public = hex::encode(key.public_key().as_bytes());
    assert!(coffer.register_node_key(&good, &public).await.unwrap());

    // The same point with the top bit set: X25519 reads it as the same key, parsing refuses it.
    let (old, _) = coffer
        .create_node(&op, NodeName::parse("old").unwrap())
        .await
        .unwrap();
    let other = NodeKey::create(&dir.path().join("old.key")).unwrap();
    let mut stored = *other.public_key().as_bytes();
    stored[31] |= 0x80;
    assert!(coffer_crypto::NodePublicKey::parse(&stored).is_err());
    storage
        .register_node_key(
            old.id,
            stored,
            coffer_storage::NodeGrant {
                node_id: old.id,
                rk_version: 1,
                ephemeral_public: [1; 32],
                sealed: vec![1; 60],
            },
            &[],
        )
        .await
        .unwrap();

    let err = coffer.revoke_node(&op, good.id).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&old.id.to_string()) && message.contains("revoke that node"),
        "{message}"
    );
    assert!(
        storage
            .get_node(good.id)
            .await
            .unwrap()
            .unwrap()
            .revoked
            .is_none(),
        "nothing revoked"
    );
    coffer.revoke_node(&op, old.id).await.unwrap();
    coffer.revoke_node(&op, good.id).await.unwrap();
    assert_eq!(coffer.keys.replication_key_version(), Some(3));
}

/// A revocation is not cancelled with its request: dropped while it waits at the DEK gate (a
/// client gone, a timeout), it still commits, and the keyring moves to the new keys with it,
/// so that writes go on under them.
#[tokio::test]
async fn a_revocation_dropped_by_its_request_still_completes() {
    let dir = tempfile::tempdir().unwrap();
    let kek: Arc<dyn KekProvider> = Arc::new(FileKek::create(&dir.path().join("kek")).unwrap());
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&dir.path().join("db")).unwrap());
    let coffer = Coffer::open(
        Arc::clone(&storage),
        kek,
        Limits::default(),
        DekPolicy::default(),
    )
    .await
    .unwrap();
    let (account, token) = coffer.bootstrap("acme").await.unwrap();
    let op = coffer
        .authenticate(token.expose_secret(), Default::default())
        .await
        .unwrap();
    let (node, _) = coffer
        .create_node(&op, NodeName::parse("e1").unwrap())
        .await
        .unwrap();
    let key = NodeKey::create(&dir.path().join("e1.key")).unwrap();
    let public = hex::encode(key.public_key().as_bytes());
    assert!(coffer.register_node_key(&node, &public).await.unwrap());

    // A write carrying a new DEK holds the gate, so the revocation waits there.
    let mut write = coffer.keys.dek_write();
    let sealing = write.seal(account).await.unwrap();
    write.carry(&sealing);
    write.enter().await.unwrap();
    {
        let mut request = std::pin::pin!(coffer.revoke_node(&op, node.id));
        let mut polls = 0;
        while !coffer.keys.dek_gate_wanted() {
            polls += 1;
            assert!(polls < 100_000, "the revocation never asked for the gate");
            let poll = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(request.as_mut().poll(cx).is_ready())
            })
            .await;
            assert!(!poll, "the revocation cannot finish before the write");
            tokio::task::yield_now().await;
        }
        // The request is dropped here.
    }
    drop(write);
    let mut waits = 0;
    while coffer.keys.replication_key_version() != Some(2) {
        waits += 1;
        assert!(waits < 1_000, "the dropped revocation never completed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        storage
            .get_node(node.id)
            .await
            .unwrap()
            .unwrap()
            .revoked
            .is_some(),
        "revoked in storage"
    );
    let store = coffer
        .create_store(&op, account, StoreName::parse("after").unwrap())
        .await
        .unwrap()
        .id;
    coffer
        .create_secrets(&op, account, store, vec![item("AFTER".into())])
        .await
        .expect("writes go on under the new keys");
}
