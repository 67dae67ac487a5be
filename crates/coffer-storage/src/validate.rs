//! Argument checks every backend makes alike before it writes (the `Invalid` answers of the
//! `Storage` trait), and the change entries they build alike. Backends call them at the same
//! point of their writes, so the order of answers (`NotFound`, `Conflict`, `Invalid`) stays
//! theirs.

use coffer_types::{AccountId, SecretId, StoreId, Version};

use crate::{Change, DekRecord, NewSecret, Result, SecretRecord, StorageError, VersionRecord};

/// Checks the secrets of a `create_secrets` call: each record in the call's account and store,
/// each value the version its record points at, each carried DEK the one its value is sealed
/// under and of the call's account.
pub fn check_new_secrets(account: AccountId, store: StoreId, secrets: &[NewSecret]) -> Result<()> {
    for new in secrets {
        let (record, value) = (&new.record, &new.value);
        if record.account_id != account || record.store_id != store {
            return Err(StorageError::Invalid(
                "a new secret's record names another account or store than the call",
            ));
        }
        if value.secret_id != record.id || value.version != record.version {
            return Err(StorageError::Invalid(
                "a new secret's value is not the version its record points at",
            ));
        }
        check_carried_dek(new.dek.as_ref(), value, account)?;
    }
    Ok(())
}

/// Checks the new value of an `update_secret` (after its `Conflict` check): a carried DEK only
/// with a value; the value of this secret, at the expected version plus one; the carried DEK
/// the value's and of the account.
pub fn check_update_value(
    value: Option<&VersionRecord>,
    dek: Option<&DekRecord>,
    secret: SecretId,
    expected: Version,
    account: AccountId,
) -> Result<()> {
    let Some(value) = value else {
        if dek.is_some() {
            return Err(StorageError::Invalid("a carried DEK without a new value"));
        }
        return Ok(());
    };
    if value.secret_id != secret {
        return Err(StorageError::Invalid(
            "a new value belongs to another secret",
        ));
    }
    if Some(value.version) != expected.next() {
        return Err(StorageError::Invalid(
            "a new value's version must be the expected version plus one",
        ));
    }
    check_carried_dek(dek, value, account)
}

/// Checks a DEK carried with `value` (see the `Storage` trait's "DEKs carried by writes").
pub fn check_carried_dek(
    dek: Option<&DekRecord>,
    value: &VersionRecord,
    account: AccountId,
) -> Result<()> {
    match dek {
        Some(dek) if dek.key.id != value.dek_id => Err(StorageError::Invalid(
            "a carried DEK is not the one its value is sealed under",
        )),
        Some(dek) if dek.account_id != account => Err(StorageError::Invalid(
            "a carried DEK belongs to another account than the call",
        )),
        _ => Ok(()),
    }
}

/// The `SecretPut` entry of a secret's state with its current value.
pub fn secret_put(record: &SecretRecord, value: &VersionRecord) -> Change {
    Change::SecretPut {
        account_id: record.account_id,
        store_id: record.store_id,
        secret_id: record.id,
        name: record.name.as_str().to_owned(),
        scopes: record.scopes.to_strings(),
        version: record.version.0,
        dek_id: value.dek_id,
        sealed_hex: hex::encode(&value.sealed),
    }
}
