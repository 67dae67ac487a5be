//! Compacting the replica's log past destroyed DEKs, on a relay's own schedule.
//!
//! A relay serves its log to the edges below it, so entries carrying a DEK the control plane
//! destroyed (its `DekPut`, values sealed under it) must leave that log too. Compacting at
//! every `DekDestroyed` applied would move the log's base as often as a tenant can force
//! destructions (store deletes), and every edge below that lags would be sent back to a
//! snapshot each time. So the replica only enters destroyed DEKs as such when it applies
//! them, and the edge compacts past them here at most once per gap: the control plane's
//! default gap, [`ResealSettings::DEFAULT_COMPACTION_GAP`] (one constant, so the two cannot
//! drift apart).

use std::time::{Duration, Instant};

use coffer_core::ResealSettings;
use coffer_storage::{SqliteStorage, Storage};

/// When the log was last compacted past destroyed DEKs, to keep to the gap.
#[derive(Debug)]
pub(crate) struct DekCompaction {
    gap: Duration,
    /// The last compaction that moved the base.
    last: Option<Instant>,
}

impl DekCompaction {
    /// At most once per the control plane's default gap (every edge's; only a relay serves
    /// its log on).
    pub(crate) fn on_default_gap() -> DekCompaction {
        DekCompaction::new(ResealSettings::DEFAULT_COMPACTION_GAP)
    }

    pub(crate) fn new(gap: Duration) -> DekCompaction {
        DekCompaction { gap, last: None }
    }

    /// Compacts the log past the entries carrying the DEKs destroyed since the last call,
    /// unless the last compaction is younger than the gap (they then wait for the next round
    /// past it). Returns the new base if it moved.
    pub(crate) async fn run(&mut self, storage: &SqliteStorage, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|at| now.saturating_duration_since(at) < self.gap)
        {
            return None;
        }
        match storage.compact_destroyed_deks().await {
            Ok(Some(base)) => {
                self.last = Some(now);
                tracing::info!(base, "replica log compacted past destroyed DEKs");
                Some(base)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "could not compact the replica's log past destroyed DEKs");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use coffer_storage::{Change, ChangeRecord};
    use coffer_types::{AccountId, DekId, Timestamp};

    use super::*;

    /// Entries chained onto the replica's head, as an upstream sends them.
    async fn apply(storage: &SqliteStorage, changes: &[Change]) {
        let state = storage.log_state().await.unwrap();
        let (mut seq, mut prev) = (state.head_seq, state.head_hash);
        let records = changes
            .iter()
            .map(|change| {
                seq += 1;
                let payload = serde_json::to_vec(change).unwrap();
                let hash = ChangeRecord::chain_hash(&prev, seq, &payload);
                prev = hash;
                ChangeRecord {
                    seq,
                    at: Timestamp::from_unix_micros(1_000_000),
                    hash,
                    payload,
                }
            })
            .collect();
        storage.apply_entries(records).await.unwrap();
    }

    /// The retained entries that carry `dek` (its `DekDestroyed`, which carries only the id,
    /// aside).
    async fn carrying(storage: &SqliteStorage, dek: DekId) -> Vec<u64> {
        let base = storage.log_state().await.unwrap().base_seq;
        storage
            .changes_after(base, 1_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| match r.change().unwrap() {
                Change::DekPut { dek_id, .. } => dek_id == dek,
                _ => false,
            })
            .map(|r| r.seq)
            .collect()
    }

    /// An edge keeps to the control plane's default gap.
    #[test]
    fn an_edge_compacts_on_the_control_planes_default_gap() {
        assert_eq!(
            DekCompaction::on_default_gap().gap,
            ResealSettings::default().compaction_gap
        );
    }

    /// Many `DekDestroyed` in a row (a tenant deleting store after store) move a relay's log
    /// base once within the gap, not once each; past the gap, the destroyed DEKs' entries
    /// leave the log all the same.
    #[tokio::test]
    async fn destroyed_deks_compact_a_relays_log_at_most_once_per_gap() {
        let dir = tempfile::tempdir().unwrap();
        let storage = SqliteStorage::open(&dir.path().join("replica.db")).unwrap();
        storage
            .install_snapshot([7; 16], 0, ChangeRecord::GENESIS_HASH, 0)
            .commit()
            .await
            .unwrap();
        let account = AccountId::from_bytes([1; 16]);
        let deks: Vec<DekId> = (1..=6u8).map(|i| DekId::from_bytes([i; 16])).collect();
        let mut changes = vec![Change::AccountPut {
            account_id: account,
            name: "a".into(),
        }];
        changes.extend(deks.iter().map(|&dek_id| Change::DekPut {
            account_id: account,
            dek_id,
            kek_id: "rk:1".into(),
            wrapped_hex: "00".repeat(40),
        }));
        apply(&storage, &changes).await;
        let base = || async { storage.log_state().await.unwrap().base_seq };
        assert_eq!(base().await, 0);

        let gap = Duration::from_secs(600);
        let mut job = DekCompaction::new(gap);
        let t0 = Instant::now();
        let mut moves = 0;
        // Destructions arrive a second apart, each followed by a housekeeping round.
        for (i, &dek_id) in deks.iter().enumerate() {
            let was = base().await;
            apply(
                &storage,
                &[Change::DekDestroyed {
                    account_id: account,
                    dek_id,
                }],
            )
            .await;
            job.run(&storage, t0 + Duration::from_secs(i as u64)).await;
            if base().await != was {
                moves += 1;
            }
        }
        assert_eq!(
            moves, 1,
            "one compaction within the gap, not one per destruction"
        );
        // The first destruction was compacted past at once; the later ones wait for the gap.
        assert!(carrying(&storage, deks[0]).await.is_empty());
        for &dek in &deks[1..] {
            assert_eq!(carrying(&storage, dek).await.len(), 1, "{dek}");
        }

        // Past the gap, one compaction takes every DEK destroyed since.
        let moved = job.run(&storage, t0 + gap + Duration::from_secs(60)).await;
        assert!(moved.is_some());
        for &dek in &deks {
            assert!(carrying(&storage, dek).await.is_empty(), "{dek}");
        }
        // The `DekDestroyed` entries themselves stay: they carry only the id.
        let retained = storage.changes_after(base().await, 1_000).await.unwrap();
        assert_eq!(retained.len(), deks.len());
        assert!(
            retained
                .iter()
                .all(|r| matches!(r.change().unwrap(), Change::DekDestroyed { .. }))
        );
        // And nothing is due until more are destroyed.
        let later = t0 + 3 * gap;
        assert_eq!(job.run(&storage, later).await, None);
        storage.shutdown().await;
    }
}
