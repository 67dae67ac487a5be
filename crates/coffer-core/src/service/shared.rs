//! A database that other instances write to as well (PostgreSQL, `cp -r D D2` + one URL).
//!
//! Each instance has the shared state but keeps its keys locally: the KEK (and its versions)
//! and account KEKs live in its data dir or HSM. So on a shared database:
//! - caches serve a row for at most a bounded time after it was read (the token cache, and the
//!   runtime and node caches, which also follow the change-log head), so a revocation committed
//!   by another instance is seen here within that time even if the head stops moving (a lost
//!   notification connection);
//! - what would make a key on this machine only is refused: a KEK rotation (the new version's
//!   key would exist here alone, and the rewrap would leave every other instance unable to
//!   unwrap) and an account KEK (likewise);
//! - at start, a KEK id the database names that this instance's keys lack is refused;
//! - a write storage refused (`Conflict`) waits, if the DEK gate in storage refused it (a node's
//!   revocation under way on another instance), until the gate opens (bounded: a 503), then
//!   refreshes its DEK and the replication key before it seals again
//!   ([`Coffer::refresh_after_conflict`]; the re-seal job does the same).

use std::collections::HashSet;
use std::time::Duration;

use super::Coffer;
use crate::CoreError;

/// Why a KEK rotation is refused on a shared database.
pub(crate) const ROTATION_ON_SHARED_DATABASE: &str = "KEK rotation is not supported on a database shared by several instances (PostgreSQL): the new KEK version would exist on this instance only, and the others could no longer unwrap the keys it rewraps";
/// Why an account KEK is refused on a shared database.
pub(crate) const ACCOUNT_KEK_ON_SHARED_DATABASE: &str = "account KEKs are not supported on a database shared by several instances (PostgreSQL): the account's key would exist on this instance only, and the others could no longer unwrap its DEKs";

impl Coffer {
    /// Tells this service that other instances write to its database too (PostgreSQL): API
    /// token rows and runtime and node cache entries are then served for at most `max_age`
    /// after they were read, and KEK rotations and account KEKs are refused (see the module
    /// comment). Call once, before serving.
    pub fn share_database(&self, max_age: Duration) {
        let _ = self.shared_database.set(max_age);
        self.token_cache.set_max_age(max_age);
        self.runtime_cache.set_max_age(max_age);
        self.node_cache.set_max_age(max_age);
    }

    /// Whether [`Coffer::share_database`] was called.
    pub(crate) fn database_is_shared(&self) -> bool {
        self.shared_database.get().is_some()
    }

    /// After storage refused a secret write with `Conflict`: on a shared database another
    /// instance may be revoking a node (its DEK gate in storage refuses new DEKs meanwhile),
    /// or may have retired or destroyed the DEK this one seals `account`'s values with
    /// (a store deleted, the DEK lifecycle), or rotated the replication key. So this waits,
    /// if the gate refused a write of this instance, until no revocation holds it (bounded:
    /// `Unavailable`, a 503, after the storage's gate wait; a lost race does not wait), then
    /// refreshes the DEK and the replication key before the retry. Alone, a
    /// conflict is a lost race (a version, a queued update) and the DEK is kept: dropping it
    /// would make a DEK (a KEK call) per conflict.
    pub(crate) async fn refresh_after_conflict(
        &self,
        account: coffer_types::AccountId,
    ) -> Result<(), CoreError> {
        if self.database_is_shared() {
            self.keys.refresh_shared(account).await?;
        }
        Ok(())
    }

    /// The KEK ids that wrap keys in storage but are neither a version of this instance's KEK
    /// nor an account KEK it holds: an instance with such a database cannot unwrap those keys
    /// (on a shared database, another instance rotated or made one its copies lack).
    pub async fn unknown_kek_ids(&self) -> Result<Vec<String>, CoreError> {
        let mut known: HashSet<String> = self
            .keys
            .account_keks()
            .kek_ids()
            .into_iter()
            .map(|id| id.0)
            .collect();
        known.insert(self.keys.current_kek_id().0);
        if let Some(rotation) = &self.rotation {
            known.extend(rotation.kek.versions().into_iter().map(|v| v.kek_id.0));
        }
        Ok(self
            .storage
            .kek_usage()
            .await?
            .into_iter()
            .map(|u| u.kek_id)
            // Keys wrapped by replication keys, which storage holds (KEK-wrapped) itself.
            .filter(|id| {
                !id.starts_with("rk:") && !id.starts_with(coffer_storage::ARK_KEK_ID_PREFIX)
            })
            .filter(|id| !known.contains(id))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use coffer_crypto::{FileKek, KekProvider};
    use coffer_storage::{DekRecord, SqliteStorage, Storage, WrappedKeyRecord};
    use coffer_types::{DekId, Timestamp};

    use crate::{Coffer, CoreError, DekPolicy, Limits, RequestContext};

    /// On a shared database a KEK rotation and an account KEK are refused (the key would exist
    /// on one instance only), and a KEK id in storage that this instance lacks is named.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shared_database_refuses_keys_made_on_one_instance_only() {
        let dir = tempfile::tempdir().unwrap();
        let kek: Arc<dyn KekProvider> = Arc::new(FileKek::create(&dir.path().join("kek")).unwrap());
        let storage: Arc<dyn Storage> =
            Arc::new(SqliteStorage::open(&dir.path().join("db")).unwrap());
        let coffer = Coffer::open(
            storage.clone(),
            kek,
            Limits::default(),
            DekPolicy::default(),
        )
        .await
        .unwrap();
        let (_, token) = coffer.bootstrap("acme").await.unwrap();
        let op = coffer
            .authenticate(token.expose_secret(), RequestContext::default())
            .await
            .unwrap();
        let account = coffer.create_account(&op, "tenant").await.unwrap().id;
        assert_eq!(
            coffer.unknown_kek_ids().await.unwrap(),
            Vec::<String>::new()
        );

        coffer.share_database(Duration::from_millis(500));
        match coffer.start_kek_rotation(&op).await {
            Err(CoreError::KekRotationUnsupported(m)) => {
                assert_eq!(m, super::ROTATION_ON_SHARED_DATABASE)
            }
            other => panic!("expected the rotation refused, got {other:?}"),
        }
        match coffer
            .set_account_kek(&op, account, crate::AccountKekSpec::NewFile)
            .await
        {
            Err(CoreError::KekRotationUnsupported(m)) => {
                assert_eq!(m, super::ACCOUNT_KEK_ON_SHARED_DATABASE)
            }
            other => panic!("expected the account KEK refused, got {other:?}"),
        }

        // Another instance rotated (or made an account KEK): its id is named.
        storage
            .put_dek(DekRecord {
                account_id: account,
                key: WrappedKeyRecord {
                    id: DekId::from_bytes([9; 16]),
                    kek_id: "kek-made-elsewhere".into(),
                    wrapped: vec![0; 40],
                    created: Timestamp::now(),
                },
                rk: None,
            })
            .await
            .unwrap();
        assert_eq!(
            coffer.unknown_kek_ids().await.unwrap(),
            vec!["kek-made-elsewhere".to_owned()]
        );
    }
}
