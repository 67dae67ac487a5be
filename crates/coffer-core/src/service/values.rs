//! Sealing and opening secret values: the write side goes through a [`DekWrite`] (see
//! `keyring/gate.rs`).

use coffer_crypto::{Plaintext, ValueContext, open, seal};
use coffer_storage::{DekRecord, SecretRecord, VersionRecord};
use coffer_types::{AccountId, SecretId, StoreId, Timestamp, Version};

use super::Coffer;
use crate::keyring::DekWrite;
use crate::{CoreError, Resource};

/// Which version of which secret a value is sealed as (its context, but for the DEK).
#[derive(Debug, Clone, Copy)]
pub(super) struct VersionSlot {
    pub(super) account: AccountId,
    pub(super) store: StoreId,
    pub(super) secret: SecretId,
    pub(super) version: Version,
}

impl Coffer {
    /// Seals `value` as `slot` under a DEK from `write`; returns it with the DEK it is sealed
    /// under, which the write carries (it may not be stored yet: the write enters `write`
    /// before its storage call).
    pub(super) async fn seal_version(
        &self,
        write: &mut DekWrite<'_>,
        slot: VersionSlot,
        value: &Plaintext,
        now: Timestamp,
    ) -> Result<(VersionRecord, DekRecord), CoreError> {
        let sealing = write.seal(slot.account).await?;
        let ctx = ValueContext {
            account: slot.account,
            store: slot.store,
            secret: slot.secret,
            version: slot.version,
            dek: sealing.id,
        };
        let sealed = seal(&sealing.key, &ctx, value)?;
        let record = VersionRecord {
            secret_id: slot.secret,
            version: slot.version,
            dek_id: sealing.id,
            sealed: sealed.0,
            created: now,
        };
        Ok((record, write.carry(&sealing)))
    }

    /// Opens a secret's current value. Only for server-side operations (duplicate) and, later,
    /// runtime reads by bound services: never for an admin API response.
    pub(super) async fn open_current(&self, secret: &SecretRecord) -> Result<Plaintext, CoreError> {
        let Some(version) = self.storage.get_version(secret.id, secret.version).await? else {
            // `secret` was read a moment ago. A version row only disappears with its secret,
            // so the secret has most likely been deleted since (a duplicate racing a delete
            // of its source): that is a plain 404. Only a secret still there without its
            // current version is damage.
            let now = self
                .storage
                .get_secret(secret.account_id, secret.store_id, secret.id)
                .await?;
            return Err(match now {
                None => CoreError::NotFound(Resource::Secret),
                Some(_) => CoreError::Internal(format!(
                    "secret {} lacks version {}",
                    secret.id, secret.version
                )),
            });
        };
        let key = self
            .keys
            .opening_key(secret.account_id, version.dek_id)
            .await?;
        let ctx = ValueContext {
            account: secret.account_id,
            store: secret.store_id,
            secret: secret.id,
            version: version.version,
            dek: version.dek_id,
        };
        open(&key, &ctx, &coffer_crypto::SealedValue(version.sealed)).map_err(|_| {
            CoreError::Internal(format!(
                "secret {} version {} failed to open",
                secret.id, secret.version
            ))
        })
    }
}
