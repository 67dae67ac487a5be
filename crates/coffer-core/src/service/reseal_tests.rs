//! The DEK lifecycle job (`reseal.rs`): re-seal, concurrent writes, resumption, pruning,
//! destruction (control plane, change log, a replica) and a store's deletion.

use std::time::Duration;

use coffer_crypto::{FileKek, SealedValue as Sealed, ValueContext, open};
use coffer_storage::{Change, ChangeRecord, Reseal, SqliteStorage};
use coffer_types::DekId;

use super::*;
use crate::Comment;
use crate::ResealSettings;
use coffer_crypto::Plaintext;
use coffer_storage::SecretRecord;
use coffer_types::{Scopes, SecretName, StoreId, StoreName, Version};

struct Fx {
    dir: tempfile::TempDir,
    coffer: Coffer,
    kek: Arc<dyn KekProvider>,
    op: Principal,
    account: AccountId,
    store: StoreId,
}

/// DEKs age out after `max_age`.
async fn fx(max_age: Duration, max_seals: u64) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let kek: Arc<dyn KekProvider> = Arc::new(FileKek::create(&dir.path().join("kek")).unwrap());
    let coffer = open_coffer(&dir, &kek, max_age, max_seals).await;
    let (account, token) = coffer.bootstrap("acme").await.unwrap();
    let op = coffer
        .authenticate(token.expose_secret(), Default::default())
        .await
        .unwrap();
    let store = coffer
        .create_store(&op, account, StoreName::parse("prod").unwrap())
        .await
        .unwrap()
        .id;
    Fx {
        dir,
        coffer,
        kek,
        op,
        account,
        store,
    }
}

async fn open_coffer(
    dir: &tempfile::TempDir,
    kek: &Arc<dyn KekProvider>,
    max_age: Duration,
    max_seals: u64,
) -> Coffer {
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&dir.path().join("db")).unwrap());
    Coffer::open(
        storage,
        Arc::clone(kek),
        Limits::default(),
        DekPolicy { max_age, max_seals },
    )
    .await
    .unwrap()
}

fn fast(keep_versions: u32) -> ResealSettings {
    ResealSettings {
        batch: 3,
        pause: Duration::ZERO,
        interval: Duration::from_secs(3600),
        keep_versions,
        compaction_gap: Duration::ZERO,
    }
}

fn item(name: &str, value: &str) -> CreateSecretItem {
    CreateSecretItem {
        name: SecretName::parse(name).unwrap(),
        value: Plaintext::new(value.as_bytes().to_vec()),
        scopes: Scopes::default(),
        comment: Comment::default(),
    }
}

impl Fx {
    async fn create_in(&self, store: StoreId, names: &[&str]) -> Vec<SecretRecord> {
        let items = names
            .iter()
            .map(|n| item(n, &format!("value of {n}")))
            .collect();
        self.coffer
            .create_secrets(&self.op, self.account, store, items)
            .await
            .unwrap()
    }

    async fn value(&self, secret: &SecretRecord) -> String {
        let now = self
            .coffer
            .storage()
            .get_secret(secret.account_id, secret.store_id, secret.id)
            .await
            .unwrap()
            .unwrap();
        let plain = self.coffer.open_current(&now).await.unwrap();
        String::from_utf8(plain.expose_secret().to_vec()).unwrap()
    }

    async fn dek_of(&self, secret: &SecretRecord) -> DekId {
        let now = self
            .coffer
            .storage()
            .get_secret(secret.account_id, secret.store_id, secret.id)
            .await
            .unwrap()
            .unwrap();
        self.coffer
            .storage()
            .get_version(secret.id, now.version)
            .await
            .unwrap()
            .unwrap()
            .dek_id
    }

    /// The retained log entries (after the base).
    async fn log(&self) -> Vec<ChangeRecord> {
        let state = self.coffer.storage().log_state().await.unwrap();
        self.coffer
            .storage()
            .changes_after(state.base_seq, 100_000)
            .await
            .unwrap()
    }
}

/// Installs a snapshot of `from` into `to`, as an edge bootstraps.
async fn copy_snapshot(from: &dyn Storage, to: &SqliteStorage) {
    use coffer_storage::SnapshotPart;
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let consume = async {
        let Some(SnapshotPart::Header {
            cluster_id,
            seq,
            hash,
            count,
        }) = rx.recv().await
        else {
            panic!("a snapshot starts with its header");
        };
        let mut install = to.install_snapshot(cluster_id, seq, hash, count);
        while let Some(SnapshotPart::Item(item)) = rx.recv().await {
            install.push(item).await.unwrap();
        }
        install.commit().await.unwrap();
    };
    let (produced, ()) = tokio::join!(from.snapshot(tx), consume);
    produced.unwrap();
}

/// The retained entries that carry `dek` (its wrap, values sealed under it): every entry
/// naming it but its `DekDestroyed`.
fn carried(log: &[ChangeRecord], dek: DekId) -> Vec<&ChangeRecord> {
    log.iter()
        .filter(|r| !matches!(r.change().unwrap(), Change::DekDestroyed { .. }))
        .filter(|r| names_dek(r, dek))
        .collect()
}

fn names_dek(record: &ChangeRecord, dek: DekId) -> bool {
    String::from_utf8_lossy(&record.payload).contains(&dek.to_string())
}

#[tokio::test]
async fn values_under_aged_deks_are_resealed_and_the_old_dek_destroyed_everywhere() {
    let f = fx(Duration::from_millis(300), 1 << 20).await;
    let secrets = f.create_in(f.store, &["A", "B", "C", "D", "E"]).await;
    let old = f.dek_of(&secrets[0]).await;
    // A replica that followed the log up to here.
    let replica = SqliteStorage::open(&f.dir.path().join("replica")).unwrap();
    copy_snapshot(&**f.coffer.storage(), &replica).await;
    assert!(replica.get_dek(old).await.unwrap().is_some());
    let before: Vec<SecretRecord> = {
        let mut out = Vec::new();
        for s in &secrets {
            out.push(
                f.coffer
                    .storage()
                    .get_secret(f.account, f.store, s.id)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        out
    };

    tokio::time::sleep(Duration::from_millis(400)).await;
    f.coffer.run_dek_lifecycle_pass(fast(1)).await.unwrap();

    let new = f.dek_of(&secrets[0]).await;
    assert_ne!(new, old);
    for (s, b) in secrets.iter().zip(&before) {
        assert_eq!(f.dek_of(s).await, new);
        assert_eq!(f.value(s).await, format!("value of {}", s.name.as_str()));
        let now = f
            .coffer
            .storage()
            .get_secret(f.account, f.store, s.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((now.version, now.modified), (b.version, b.modified));
    }
    // Destroyed on the control plane (and out of its memory), and no retained entry names it.
    assert!(f.coffer.storage().get_dek(old).await.unwrap().is_none());
    assert!(f.coffer.keys.cached(f.account, old).is_none());
    let log = f.log().await;
    let destroyed = log
        .iter()
        .filter(
            |r| matches!(r.change().unwrap(), Change::DekDestroyed { dek_id, .. } if dek_id == old),
        )
        .count();
    assert_eq!(destroyed, 1);
    let resealed = log
        .iter()
        .filter(|r| matches!(r.change().unwrap(), Change::ValueResealed { .. }))
        .count();
    assert_eq!(resealed, 5);
    assert!(
        log.iter()
            .filter(|r| !matches!(r.change().unwrap(), Change::DekDestroyed { .. }))
            .all(|r| !names_dek(r, old)),
        "a retained entry still names the destroyed DEK"
    );

    // The replica applies the rest of the log: new ciphertexts, the old DEK gone.
    let head = replica.change_head().await.unwrap();
    let rest = f
        .coffer
        .storage()
        .changes_after(head, 100_000)
        .await
        .unwrap();
    replica.apply_entries(rest).await.unwrap();
    assert!(replica.get_dek(old).await.unwrap().is_none());
    assert!(replica.get_dek(new).await.unwrap().is_some());
    for s in &secrets {
        let v = replica.get_version(s.id, s.version).await.unwrap().unwrap();
        assert_eq!(v.dek_id, new);
        let cp = f
            .coffer
            .storage()
            .get_version(s.id, s.version)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v.sealed, cp.sealed);
    }
    // A replica bootstrapping now gets no trace of it.
    let late = SqliteStorage::open(&f.dir.path().join("late")).unwrap();
    copy_snapshot(&**f.coffer.storage(), &late).await;
    assert!(late.get_dek(old).await.unwrap().is_none());
    assert!(late.get_dek(new).await.unwrap().is_some());
    // A second pass has nothing left to do with the old DEK. (It may move the values on again
    // if the new DEK has aged past its 300 ms meanwhile, as on a loaded machine: that is the
    // policy working, not a leftover.)
    let head = f.coffer.storage().change_head().await.unwrap();
    f.coffer.run_dek_lifecycle_pass(fast(1)).await.unwrap();
    let after = f
        .coffer
        .storage()
        .changes_after(head, 100_000)
        .await
        .unwrap();
    assert!(
        after
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.payload).contains(&old.to_string())),
        "the second pass touched the destroyed DEK again"
    );
}

/// A store's deletion is stored work: a process stopped right after it (before any pass) and
/// started again still moves the other stores' values off the shared DEK and destroys it, and
/// never seals with that DEK again.
#[tokio::test]
async fn a_store_delete_is_finished_after_a_restart() {
    let f = fx(Duration::from_secs(3600), 1 << 20).await;
    let other = f
        .coffer
        .create_store(&f.op, f.account, StoreName::parse("other").unwrap())
        .await
        .unwrap()
        .id;
    f.create_in(f.store, &["A"]).await;
    let kept = f.create_in(other, &["K"]).await;
    let shared = f.dek_of(&kept[0]).await;
    f.coffer
        .delete_store(&f.op, f.account, f.store, true)
        .await
        .unwrap();
    let again = open_coffer(&f.dir, &f.kek, Duration::from_secs(3600), 1 << 20).await;
    // A new value after the restart is not sealed under the given-up DEK.
    let items = vec![item("N", "new")];
    let made = again
        .create_secrets(&f.op, f.account, other, items)
        .await
        .unwrap();
    let v = again
        .storage()
        .get_version(made[0].id, made[0].version)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(v.dek_id, shared);
    again.run_dek_lifecycle_pass(fast(1)).await.unwrap();
    assert!(again.storage().get_dek(shared).await.unwrap().is_none());
    let k = again
        .storage()
        .get_version(kept[0].id, kept[0].version)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(k.dek_id, v.dek_id, "moved onto the DEK sealing now");
}

/// A store force-deleted while it holds the account's only values: its DEK, the keyring's
/// active one until then, is given up and so destroyed by the next pass, not kept as a
/// sealing DEK that nothing will ever seal with again.
#[tokio::test]
async fn deleting_the_only_store_with_values_destroys_its_dek() {
    let f = fx(Duration::from_secs(3600), 1 << 20).await;
    let secrets = f.create_in(f.store, &["A", "B"]).await;
    let dek = f.dek_of(&secrets[0]).await;
    assert!(f.coffer.keys.cached(f.account, dek).is_some());
    f.coffer
        .delete_store(&f.op, f.account, f.store, true)
        .await
        .unwrap();
    f.coffer.run_dek_lifecycle_pass(fast(1)).await.unwrap();

    assert!(f.coffer.storage().get_dek(dek).await.unwrap().is_none());
    assert!(f.coffer.keys.cached(f.account, dek).is_none());
    assert!(!f.coffer.keys.sealing_deks().contains(&dek));
    assert!(f.log().await.iter().any(|r| matches!(
        r.change().unwrap(),
        Change::DekDestroyed { dek_id, .. } if dek_id == dek
    )));
    // The account writes on, under a new DEK.
    let other = f
        .coffer
        .create_store(&f.op, f.account, StoreName::parse("other").unwrap())
        .await
        .unwrap()
        .id;
    let made = f.create_in(other, &["N"]).await;
    assert_ne!(f.dek_of(&made[0]).await, dek);
    assert_eq!(f.value(&made[0]).await, "value of N");
}

/// The change log is compacted past destroyed DEKs at most once per `compaction_gap`, not
/// per destruction (which a tenant can force), so edges behind are not sent to snapshots
/// over and over; the compaction that comes leaves no retained entry naming a destroyed DEK.
#[tokio::test]
async fn compaction_past_destroyed_deks_waits_for_its_gap() {
    let f = fx(Duration::from_secs(3600), 1).await;
    let job = crate::reseal::Lifecycle::new(
        Arc::clone(f.coffer.storage()),
        Arc::clone(&f.coffer.keys),
        ResealSettings {
            compaction_gap: Duration::from_secs(3600),
            ..fast(1)
        },
        false,
    );
    let base = || async { f.coffer.storage().log_state().await.unwrap().base_seq };

    let a = f.create_in(f.store, &["A"]).await;
    let dek_a = f.dek_of(&a[0]).await;
    f.coffer
        .delete_secrets(&f.op, f.account, f.store, &[a[0].id])
        .await
        .unwrap();
    job.pass().await.unwrap();
    assert!(f.coffer.storage().get_dek(dek_a).await.unwrap().is_none());
    assert!(
        carried(&f.log().await, dek_a).is_empty(),
        "the first destruction is compacted at once"
    );
    let first = base().await;
    assert!(first > 0);

    let b = f.create_in(f.store, &["B"]).await;
    let dek_b = f.dek_of(&b[0]).await;
    f.coffer
        .delete_secrets(&f.op, f.account, f.store, &[b[0].id])
        .await
        .unwrap();
    job.pass().await.unwrap();
    assert!(f.coffer.storage().get_dek(dek_b).await.unwrap().is_none());
    assert!(f.coffer.keys.cached(f.account, dek_b).is_none());
    assert_eq!(base().await, first, "no second compaction within the gap");
    let log = f.log().await;
    assert!(
        !carried(&log, dek_b).is_empty(),
        "its DekPut is still retained"
    );
    assert!(log.iter().any(|r| matches!(
        r.change().unwrap(),
        Change::DekDestroyed { dek_id, .. } if dek_id == dek_b
    )));

    // Once the gap has passed (here: a job without one), the destructions since are
    // compacted.
    f.coffer.run_dek_lifecycle_pass(fast(1)).await.unwrap();
    assert!(base().await > first);
    assert!(carried(&f.log().await, dek_b).is_empty());
    let c = f.create_in(f.store, &["C"]).await;
    assert_eq!(f.value(&c[0]).await, "value of C");
}

/// A node's revocation retires every DEK made under the old replication key, by a stored flag
/// (not by comparing creation times): none seals again, also after a restart, and their values
/// are re-sealed onto a DEK made under the new key.
#[tokio::test]
async fn deks_made_before_a_revocation_are_retired_and_resealed_away_from() {
    let f = fx(Duration::from_secs(3600), 1 << 20).await;
    let secrets = f.create_in(f.store, &["A", "B"]).await;
    let before = f.dek_of(&secrets[0]).await;
    let (node, _token) = f
        .coffer
        .create_node(&f.op, coffer_types::NodeName::parse("e1").unwrap())
        .await
        .unwrap();
    let key = coffer_crypto::NodeKey::create(&f.dir.path().join("node.key")).unwrap();
    let public = hex::encode(key.public_key().as_bytes());
    assert!(f.coffer.register_node_key(&node, &public).await.unwrap());
    f.coffer.revoke_node(&f.op, node.id).await.unwrap();

    let again = open_coffer(&f.dir, &f.kek, Duration::from_secs(3600), 1 << 20).await;
    let made = again
        .create_secrets(&f.op, f.account, f.store, vec![item("C", "c")])
        .await
        .unwrap();
    let c = again
        .storage()
        .get_version(made[0].id, made[0].version)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(
        c.dek_id, before,
        "a DEK made before the revocation seals nothing more"
    );
    again.run_dek_lifecycle_pass(fast(1)).await.unwrap();
    assert!(again.storage().get_dek(before).await.unwrap().is_none());
    for s in &secrets {
        let v = again
            .storage()
            .get_version(s.id, s.version)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v.dek_id, c.dek_id);
    }
    assert_eq!(f.value(&secrets[1]).await, "value of B");
}

/// What an edge runs after applying the feed: unwrapped DEKs its storage no longer holds leave
/// memory.
#[tokio::test]
async fn destroyed_deks_are_swept_from_memory() {
    let f = fx(Duration::from_secs(3600), 1).await;
    let secrets = f.create_in(f.store, &["A", "B"]).await;
    let (a, b) = (f.dek_of(&secrets[0]).await, f.dek_of(&secrets[1]).await);
    assert_ne!(a, b, "one DEK per seal");
    assert_eq!(f.value(&secrets[0]).await, "value of A");
    assert!(f.coffer.keys.cached(f.account, a).is_some());
    // Storage alone destroys A's DEK (as a replica applying `DekDestroyed` does).
    f.coffer
        .delete_secrets(&f.op, f.account, f.store, &[secrets[0].id])
        .await
        .unwrap();
    let keep = f.coffer.keys.sealing_deks();
    let destroyed = f
        .coffer
        .storage()
        .destroy_unreferenced_deks(keep, 100)
        .await
        .unwrap();
    assert!(destroyed.iter().any(|d| d.dek_id == a));
    assert!(
        f.coffer.keys.cached(f.account, a).is_some(),
        "still in memory"
    );
    assert!(f.coffer.forget_destroyed_deks().await.unwrap() >= 1);
    assert!(f.coffer.keys.cached(f.account, a).is_none());
    assert!(
        f.coffer.keys.cached(f.account, b).is_some(),
        "a live DEK stays"
    );
    assert_eq!(f.value(&secrets[1]).await, "value of B");
}

#[tokio::test]
async fn a_patch_racing_the_reseal_wins() {
    let f = fx(Duration::from_millis(200), 1 << 20).await;
    let secrets = f.create_in(f.store, &["A"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cutoff = Timestamp::now();
    let read = f
        .coffer
        .storage()
        .values_sealed_before(f.account, cutoff, None, 10)
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    // The PATCH lands between the job's read and its write.
    f.coffer
        .update_secret(
            &f.op,
            f.account,
            f.store,
            secrets[0].id,
            UpdateSecret {
                value: Some(Plaintext::new(b"patched".to_vec())),
                scopes: None,
                comment: None,
            },
        )
        .await
        .unwrap();
    // The same bytes sealed again are still a different row content than what the PATCH
    // left as current; the stale re-seal touches only the superseded version it read.
    let stale = Reseal {
        dek_id: read[0].dek_id,
        sealed: vec![0; 40],
        old: read[0].clone(),
    };
    let head = f.coffer.storage().change_head().await.unwrap();
    let done = f
        .coffer
        .storage()
        .reseal_values(None, vec![stale.clone()])
        .await
        .unwrap();
    assert_eq!(done, 1, "the superseded version still held the bytes read");
    // Not the current version: nothing logged, and the current value is the PATCH's.
    assert_eq!(f.coffer.storage().change_head().await.unwrap(), head);
    assert_eq!(f.value(&secrets[0]).await, "patched");
    // Replayed, the compare-and-set finds other bytes: nothing changes.
    let done = f
        .coffer
        .storage()
        .reseal_values(None, vec![stale])
        .await
        .unwrap();
    assert_eq!(done, 0);
    // A deletion wins too.
    let read = f
        .coffer
        .storage()
        .values_sealed_before(f.account, Timestamp::now(), None, 10)
        .await
        .unwrap();
    f.coffer
        .delete_secrets(&f.op, f.account, f.store, &[secrets[0].id])
        .await
        .unwrap();
    let reseals = read
        .into_iter()
        .map(|old| Reseal {
            dek_id: old.dek_id,
            sealed: vec![1; 40],
            old,
        })
        .collect();
    assert_eq!(
        f.coffer
            .storage()
            .reseal_values(None, reseals)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn a_reseal_stopped_midway_resumes_from_what_is_stored() {
    let f = fx(Duration::from_millis(300), 1 << 20).await;
    let secrets = f
        .create_in(f.store, &["A", "B", "C", "D", "E", "F", "G"])
        .await;
    let old = f.dek_of(&secrets[0]).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The first batch commits, then the job is dropped mid-pass (as by a crash).
    let slow = ResealSettings {
        pause: Duration::from_secs(30),
        ..fast(1)
    };
    let cut = tokio::time::timeout(
        Duration::from_millis(500),
        f.coffer.run_dek_lifecycle_pass(slow),
    )
    .await;
    assert!(cut.is_err(), "the pass should still have been pausing");
    let mut moved = 0;
    for s in &secrets {
        if f.dek_of(s).await != old {
            moved += 1;
        }
    }
    assert_eq!(moved, 3, "one batch of three");
    // A new process over the same files (no cursor anywhere) finishes the job.
    let again = open_coffer(&f.dir, &f.kek, Duration::from_millis(300), 1 << 20).await;
    again.run_dek_lifecycle_pass(fast(1)).await.unwrap();
    for s in &secrets {
        let now = again
            .storage()
            .get_version(s.id, s.version)
            .await
            .unwrap()
            .unwrap();
        assert_ne!(now.dek_id, old);
    }
    assert!(again.storage().get_dek(old).await.unwrap().is_none());
}

#[tokio::test]
async fn superseded_versions_beyond_the_setting_are_deleted_and_their_deks_destroyed() {
    // One DEK per seal: each version has its own.
    let f = fx(Duration::from_secs(3600), 1).await;
    let secrets = f.create_in(f.store, &["A"]).await;
    let id = secrets[0].id;
    let mut deks = vec![f.dek_of(&secrets[0]).await];
    for n in 2..=4 {
        f.coffer
            .update_secret(
                &f.op,
                f.account,
                f.store,
                id,
                UpdateSecret {
                    value: Some(Plaintext::new(format!("v{n}").into_bytes())),
                    scopes: None,
                    comment: None,
                },
            )
            .await
            .unwrap();
        deks.push(f.dek_of(&secrets[0]).await);
    }
    let storage = f.coffer.storage();
    f.coffer.run_dek_lifecycle_pass(fast(2)).await.unwrap();
    for (v, present) in [(1, false), (2, false), (3, true), (4, true)] {
        assert_eq!(
            storage.get_version(id, Version(v)).await.unwrap().is_some(),
            present,
            "version {v}"
        );
        assert_eq!(
            storage
                .get_dek(deks[v as usize - 1])
                .await
                .unwrap()
                .is_some(),
            present,
            "the DEK of version {v}"
        );
    }
    f.coffer.run_dek_lifecycle_pass(fast(1)).await.unwrap();
    assert!(storage.get_version(id, Version(3)).await.unwrap().is_none());
    assert!(storage.get_dek(deks[2]).await.unwrap().is_none());
    assert_eq!(f.value(&secrets[0]).await, "v4");
}

/// Deleting a store: the DEK its values shared with another store is re-sealed away from and
/// destroyed, so nothing the control plane still holds opens the deleted ciphertexts, taken
/// from a copy of the data dir's files made before the delete.
#[tokio::test]
async fn after_a_store_delete_no_live_dek_opens_the_deleted_ciphertexts() {
    let f = fx(Duration::from_secs(3600), 1 << 20).await;
    let other = f
        .coffer
        .create_store(&f.op, f.account, StoreName::parse("other").unwrap())
        .await
        .unwrap()
        .id;
    let doomed = f.create_in(f.store, &["A", "B"]).await;
    let kept = f.create_in(other, &["K"]).await;
    let shared = f.dek_of(&doomed[0]).await;
    assert_eq!(f.dek_of(&kept[0]).await, shared);

    // Copy every file of the data dir (the database, its WAL and shared memory).
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(f.dir.path()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
    }

    f.coffer.start_dek_lifecycle(fast(1));
    f.coffer
        .delete_store(&f.op, f.account, f.store, true)
        .await
        .unwrap();
    // The delete wakes the job; wait for it to finish its work.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while f.coffer.storage().get_dek(shared).await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the shared DEK was never destroyed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(f.value(&kept[0]).await, "value of K");

    let copied = SqliteStorage::open(&copy.path().join("db")).unwrap();
    let live = f.coffer.storage().list_deks().await.unwrap();
    assert!(!live.is_empty());
    for s in &doomed {
        let v = copied.get_version(s.id, s.version).await.unwrap().unwrap();
        assert_eq!(v.dek_id, shared);
        for dek in &live {
            let key = f
                .coffer
                .keys
                .opening_key(dek.account_id, dek.key.id)
                .await
                .unwrap();
            for claimed in [v.dek_id, dek.key.id] {
                let ctx = ValueContext {
                    account: f.account,
                    store: f.store,
                    secret: s.id,
                    version: s.version,
                    dek: claimed,
                };
                assert!(open(&key, &ctx, &Sealed(v.sealed.clone())).is_err());
            }
        }
        // The check can fail: the copy's own wrapped DEK, unwrapped by the live KEK, opens
        // the ciphertext (the documented limit, until `coffer kek rotate` retires that KEK).
        let wrapped = copied.get_dek(shared).await.unwrap().unwrap();
        let key = f
            .kek
            .unwrap(
                &coffer_crypto::WrappedDataKey {
                    kek_id: coffer_crypto::KekId(wrapped.key.kek_id.clone()),
                    bytes: wrapped.key.wrapped.clone(),
                },
                &coffer_crypto::DekContext {
                    account: Some(f.account),
                    dek: shared,
                    purpose: crate::kek_call::DEK_PURPOSE,
                },
            )
            .unwrap();
        let ctx = ValueContext {
            account: f.account,
            store: f.store,
            secret: s.id,
            version: s.version,
            dek: shared,
        };
        assert!(open(&key, &ctx, &Sealed(v.sealed.clone())).is_ok());
    }
    f.coffer.shutdown().await;
}

/// Re-seal throughput for 100,000 values (docs/benchmarks.md). Ignored: run it with
/// `cargo test -p coffer-core --release --lib -- --ignored --nocapture reseal_throughput`.
/// The same path runs in CI on 2,000 values (`a_pass_reseals_values_across_many_batches`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: 100,000 values take minutes in a debug build; CI runs the same code on 2,000"]
async fn reseal_throughput_100k() {
    reseal_many(100_000).await;
}

/// Values made in several bulk writes, all under one DEK that the account then gives up: one
/// pass re-seals every one of them, over many batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_reseals_values_across_many_batches() {
    reseal_many(2 * crate::limits::MAX_BATCH).await;
}

/// Makes `n` values (a multiple of the bulk-write size) under one DEK, which the account then
/// gives up (as on a store's deletion), and times one pass that moves all of them, with no
/// pause between batches: the figure is what the job can do, not what its default pacing
/// (about 12,800 values/s) allows.
async fn reseal_many(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let kek: Arc<dyn KekProvider> = Arc::new(FileKek::create(&dir.path().join("kek")).unwrap());
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&dir.path().join("db")).unwrap());
    let coffer = Coffer::open(
        storage,
        kek,
        Limits {
            default_secrets_quota: n as u64,
            ..Limits::default()
        },
        DekPolicy::default(),
    )
    .await
    .unwrap();
    let (account, token) = coffer.bootstrap("acme").await.unwrap();
    let op = coffer
        .authenticate(token.expose_secret(), Default::default())
        .await
        .unwrap();
    let store = coffer
        .create_store(&op, account, StoreName::parse("prod").unwrap())
        .await
        .unwrap()
        .id;
    let made = std::time::Instant::now();
    for chunk in 0..n / crate::limits::MAX_BATCH {
        let items = (0..crate::limits::MAX_BATCH)
            .map(|i| item(&format!("S{chunk}_{i}"), "a value of about thirty bytes.."))
            .collect();
        coffer
            .create_secrets(&op, account, store, items)
            .await
            .unwrap();
    }
    eprintln!("made {n} values in {:.1?}", made.elapsed());
    coffer.keys.retire_sealing(account);
    let settings = ResealSettings {
        batch: ResealSettings::DEFAULT_BATCH,
        pause: Duration::ZERO,
        interval: Duration::from_secs(3600),
        keep_versions: 1,
        compaction_gap: Duration::ZERO,
    };
    let start = std::time::Instant::now();
    coffer.run_dek_lifecycle_pass(settings).await.unwrap();
    let took = start.elapsed();
    let left = coffer
        .storage()
        .count_sealed_before(account, coffer.keys.reseal_cutoff(account))
        .await
        .unwrap();
    assert_eq!(left, 0, "every value re-sealed");
    eprintln!(
        "re-sealed {n} values (and destroyed the old DEK) in {took:.2?}: {:.0} values/s",
        n as f64 / took.as_secs_f64()
    );
}

/// An account whose values cannot be re-sealed (here: a value that no longer opens) holds up
/// neither the accounts after it nor the destruction of DEKs nothing references; the pass
/// reports it.
#[tokio::test]
async fn an_account_that_cannot_be_resealed_holds_up_no_other() {
    let f = fx(Duration::from_millis(300), 1 << 20).await;
    let broken = f.create_in(f.store, &["A"]).await;
    // A second account, made after (accounts are visited in order of creation).
    let other = f.coffer.create_account(&f.op, "zeta").await.unwrap().id;
    let (_, token) = f
        .coffer
        .create_token(
            &f.op,
            other,
            crate::NewToken {
                name: "admin".into(),
                role: crate::Role::SuperAdmin,
                expires: None,
            },
        )
        .await
        .unwrap();
    let admin = f
        .coffer
        .authenticate(token.expose_secret(), Default::default())
        .await
        .unwrap();
    let store = f
        .coffer
        .create_store(&admin, other, StoreName::parse("prod").unwrap())
        .await
        .unwrap()
        .id;
    let good = f
        .coffer
        .create_secrets(&admin, other, store, vec![item("B", "value of B")])
        .await
        .unwrap();
    let good_dek = f.dek_of(&good[0]).await;
    // The first account's value is damaged in place (same DEK, bytes that do not open).
    let read = f
        .coffer
        .storage()
        .values_sealed_before(f.account, Timestamp::now(), None, 10)
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    let damaged = Reseal {
        dek_id: read[0].dek_id,
        sealed: vec![7; 60],
        old: read[0].clone(),
    };
    f.coffer
        .storage()
        .reseal_values(None, vec![damaged])
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(400)).await;
    let result = f.coffer.run_dek_lifecycle_pass(fast(1)).await;
    let error = result.expect_err("the damaged account is reported");
    assert!(error.contains(&f.account.to_string()), "{error}");
    // The other account was re-sealed all the same, and its old DEK destroyed.
    let moved = f.dek_of(&good[0]).await;
    assert_ne!(
        moved, good_dek,
        "the account after the broken one was re-sealed"
    );
    assert!(
        f.coffer
            .storage()
            .get_dek(good_dek)
            .await
            .unwrap()
            .is_none()
    );
    let plain = f
        .coffer
        .open_current(
            &f.coffer
                .storage()
                .get_secret(other, store, good[0].id)
                .await
                .unwrap()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(plain.expose_secret(), b"value of B");
    // The broken value stays where it was, under its DEK, which is kept.
    assert_eq!(f.dek_of(&broken[0]).await, read[0].dek_id);
    assert!(
        f.coffer
            .storage()
            .get_dek(read[0].dek_id)
            .await
            .unwrap()
            .is_some()
    );
}

/// Two instances on one database: a node revoked through A rotates the replication key and
/// retires the DEKs made under the old one, which B still holds. B's next write is refused by
/// storage once, then B loads the new replication key, makes a DEK under it and succeeds.
#[tokio::test]
async fn another_instances_revocation_does_not_block_this_ones_writes() {
    let f = fx(Duration::from_secs(3600), 1 << 20).await;
    let b = open_coffer(&f.dir, &f.kek, Duration::from_secs(3600), 1 << 20).await;
    // Two instances on one database: each is told so (as the server does on PostgreSQL).
    f.coffer.share_database(Duration::from_millis(500));
    b.share_database(Duration::from_millis(500));
    let first = b
        .create_secrets(&f.op, f.account, f.store, vec![item("B1", "b")])
        .await
        .unwrap();
    let old_dek = f.dek_of(&first[0]).await;
    let (node, _token) = f
        .coffer
        .create_node(&f.op, coffer_types::NodeName::parse("e1").unwrap())
        .await
        .unwrap();
    let key = coffer_crypto::NodeKey::create(&f.dir.path().join("node.key")).unwrap();
    let public = hex::encode(key.public_key().as_bytes());
    assert!(f.coffer.register_node_key(&node, &public).await.unwrap());
    f.coffer.revoke_node(&f.op, node.id).await.unwrap();

    let made = b
        .create_secrets(&f.op, f.account, f.store, vec![item("B2", "b")])
        .await
        .expect("B writes after A's revocation");
    assert_ne!(f.dek_of(&made[0]).await, old_dek);
    let req = UpdateSecret {
        value: Some(Plaintext::new(b"again".to_vec())),
        scopes: None,
        comment: None,
    };
    b.update_secret(&f.op, f.account, f.store, first[0].id, req)
        .await
        .expect("B updates after A's revocation");
}

/// Two instances on one database: a node revoked through A rotates the replication key while
/// B's values are due for re-sealing. B's pass makes its new DEK under the old key, which
/// storage refuses (`Conflict`); B refreshes as a write does (the new key loaded, the DEK
/// dropped) and re-seals on the same pass.
#[tokio::test]
async fn a_reseal_refused_after_another_instances_revocation_recovers_on_the_same_pass() {
    let f = fx(Duration::from_millis(300), 1 << 20).await;
    let b = open_coffer(&f.dir, &f.kek, Duration::from_millis(300), 1 << 20).await;
    f.coffer.share_database(Duration::from_millis(500));
    b.share_database(Duration::from_millis(500));
    let made = b
        .create_secrets(&f.op, f.account, f.store, vec![item("B1", "b")])
        .await
        .unwrap();
    let old_dek = f.dek_of(&made[0]).await;
    let (node, _token) = f
        .coffer
        .create_node(&f.op, coffer_types::NodeName::parse("e1").unwrap())
        .await
        .unwrap();
    let key = coffer_crypto::NodeKey::create(&f.dir.path().join("node.key")).unwrap();
    let public = hex::encode(key.public_key().as_bytes());
    assert!(f.coffer.register_node_key(&node, &public).await.unwrap());
    f.coffer.revoke_node(&f.op, node.id).await.unwrap();

    tokio::time::sleep(Duration::from_millis(400)).await;
    b.run_dek_lifecycle_pass(fast(1))
        .await
        .expect("B's pass recovers from the refusal");
    assert_ne!(f.dek_of(&made[0]).await, old_dek, "re-sealed on that pass");
    assert_eq!(f.value(&made[0]).await, "b");
}

/// Two instances on one database: B's first write after a node's revocation through A is a
/// duplicate. Storage refuses its DEK (made under the replaced key) once; the duplicate
/// refreshes and tries again, as a create does, instead of answering `Conflict`.
#[tokio::test]
async fn a_duplicate_refused_after_another_instances_revocation_is_retried() {
    let f = fx(Duration::from_secs(3600), 1 << 20).await;
    let b = open_coffer(&f.dir, &f.kek, Duration::from_secs(3600), 1 << 20).await;
    f.coffer.share_database(Duration::from_millis(500));
    b.share_database(Duration::from_millis(500));
    let first = b
        .create_secrets(&f.op, f.account, f.store, vec![item("B1", "b")])
        .await
        .unwrap();
    let old_dek = f.dek_of(&first[0]).await;
    let (node, _token) = f
        .coffer
        .create_node(&f.op, coffer_types::NodeName::parse("e1").unwrap())
        .await
        .unwrap();
    let key = coffer_crypto::NodeKey::create(&f.dir.path().join("node.key")).unwrap();
    let public = hex::encode(key.public_key().as_bytes());
    assert!(f.coffer.register_node_key(&node, &public).await.unwrap());
    f.coffer.revoke_node(&f.op, node.id).await.unwrap();

    let dup = DuplicateSecret {
        name: SecretName::parse("B1_COPY").unwrap(),
        scopes: Scopes::default(),
        comment: None,
    };
    let copy = b
        .duplicate_secret(&f.op, f.account, f.store, first[0].id, dup)
        .await
        .expect("B duplicates after A's revocation");
    assert_ne!(f.dek_of(&copy).await, old_dek);
    assert_eq!(f.value(&copy).await, "b");
}
