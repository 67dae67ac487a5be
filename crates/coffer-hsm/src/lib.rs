//! The PKCS#11 key-encryption-key provider: Coffer's KEK as an AES-256 key inside an HSM (or
//! any PKCS#11 token), generated there, never extractable, never in Coffer's memory or on disk.
//!
//! - [`Pkcs11Uri`]: the RFC 7512 URI that names the module, token and key;
//! - [`Pin`]: the token's user PIN, from `COFFER_PKCS11_PIN` or a `pin-source` file;
//! - [`Pkcs11Kek`]: the [`coffer_crypto::KekProvider`]; DEKs are wrapped and unwrapped inside
//!   the token with CKM_AES_GCM, the DEK's context as AAD, over a small pool of logged-in
//!   sessions that reconnects when the token comes back after going away;
//! - [`read_secret_file`]: the rules every file holding a secret is read by (a `pin-source`
//!   file here, an edge's node token file in the CLI).
//!
//! Kept out of coffer-crypto so that the envelope code does not link cryptoki and a module
//! loader; the file KEK stays the default. The wrapped form is specified in
//! docs/envelope-format.md.

mod account;
mod error;
mod pin;
mod pool;
mod provider;
mod secret_file;
mod token;
mod uri;

#[cfg(feature = "test-support")]
pub mod testing;

pub use error::HsmError;
pub use pin::{PIN_ENV, Pin};
#[cfg(feature = "test-support")]
pub use provider::HeldSession;
pub use provider::{FORMAT_PKCS11, Pkcs11Config, Pkcs11Kek, Pkcs11KeyVersion, WRAPPED_LEN};
pub use secret_file::read_secret_file;
pub use token::{KeyObject, KeyOrigin};
pub use uri::{Pkcs11Uri, TokenFields, UriError};
