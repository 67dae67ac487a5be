//! What the writer shares with the modules around it, a leaf so that they need not import
//! `write.rs` (which imports some of them): the writer lock's key, which a migration and
//! `coffer migrate`'s import take too, and the future a closure handed a transaction returns.

use std::pin::Pin;

use coffer_storage::Result;

/// A boxed future borrowing the write's transaction for `'a`.
pub(crate) type TxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// The advisory lock key every write takes first ("coffer" + 2 in ASCII).
pub(crate) const WRITER_LOCK: i64 = 0x636f_6666_6572_0002;
