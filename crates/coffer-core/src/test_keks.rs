//! Test doubles of a KEK, shared by core's unit tests.

use std::sync::atomic::{AtomicBool, Ordering};

use coffer_crypto::{
    CryptoError, DataKey, DekContext, FileKek, KekId, KekProvider, WrappedDataKey,
};

/// A file KEK that fails while `failing` is set (a token object gone missing, a key file that
/// cannot be read): every wrap, and every unwrap too unless `unwraps_while_failing`.
#[derive(Debug)]
pub(crate) struct FlakyKek {
    pub(crate) inner: FileKek,
    pub(crate) failing: AtomicBool,
    pub(crate) unwraps_while_failing: bool,
}

impl FlakyKek {
    fn refuse(&self) -> Result<(), CryptoError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(CryptoError::KeyUnavailable(
                "the test's KEK is failing".into(),
            ));
        }
        Ok(())
    }
}

impl KekProvider for FlakyKek {
    fn current_kek_id(&self) -> KekId {
        self.inner.current_kek_id()
    }

    fn wrap(&self, key: &DataKey, ctx: &DekContext<'_>) -> Result<WrappedDataKey, CryptoError> {
        self.refuse()?;
        self.inner.wrap(key, ctx)
    }

    fn unwrap(
        &self,
        wrapped: &WrappedDataKey,
        ctx: &DekContext<'_>,
    ) -> Result<DataKey, CryptoError> {
        if !self.unwraps_while_failing {
            self.refuse()?;
        }
        self.inner.unwrap(wrapped, ctx)
    }
}
