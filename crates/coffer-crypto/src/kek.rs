//! Key-encryption-key providers.

use std::path::Path;

use crate::{CryptoError, DataKey, DekContext, WrappedDataKey};

/// Names one KEK (one version of it, once rotation exists). Recorded beside every wrapped key so
/// that unwrap picks the right KEK and rotation can find what still needs rewrapping. Not secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KekId(pub String);

/// A source of the key-encryption key. The KEK itself never leaves the provider: callers hand
/// it DEKs to wrap and wrapped DEKs to unwrap. Implementations: [`FileKek`] (a key file in the
/// data dir) and, later, a PKCS#11 HSM provider. Rotation adds KEK versions: `wrap` always uses
/// the current one, `unwrap` uses the one named in the wrapped key.
pub trait KekProvider: Send + Sync + std::fmt::Debug {
    /// The KEK that `wrap` uses now.
    fn current_kek_id(&self) -> KekId;
    fn wrap(&self, key: &DataKey, ctx: &DekContext<'_>) -> Result<WrappedDataKey, CryptoError>;
    fn unwrap(
        &self,
        wrapped: &WrappedDataKey,
        ctx: &DekContext<'_>,
    ) -> Result<DataKey, CryptoError>;
}

/// A 256-bit KEK kept in a file (mode 0600) in the data dir.
#[derive(Debug)]
pub struct FileKek {}

impl FileKek {
    /// Creates a new random KEK at `path`; fails if the file exists.
    pub fn create(path: &Path) -> Result<FileKek, CryptoError> {
        unimplemented!()
    }
    /// Opens an existing KEK file; refuses a file readable by group or others.
    pub fn open(path: &Path) -> Result<FileKek, CryptoError> {
        unimplemented!()
    }
}

impl KekProvider for FileKek {
    fn current_kek_id(&self) -> KekId {
        unimplemented!()
    }
    fn wrap(&self, key: &DataKey, ctx: &DekContext<'_>) -> Result<WrappedDataKey, CryptoError> {
        unimplemented!()
    }
    fn unwrap(
        &self,
        wrapped: &WrappedDataKey,
        ctx: &DekContext<'_>,
    ) -> Result<DataKey, CryptoError> {
        unimplemented!()
    }
}
