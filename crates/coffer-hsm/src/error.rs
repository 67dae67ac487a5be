//! Errors of the PKCS#11 provider, in the terms an operator acts on: each says what failed and
//! which setting to check. None carries a PIN or key material.

use coffer_crypto::CryptoError;

/// Why the PKCS#11 KEK could not be opened or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    /// The URI is malformed or asks for something unsupported.
    #[error(transparent)]
    Uri(#[from] crate::UriError),
    /// No PIN, an unreadable PIN file, or a PIN the token refused.
    #[error("{0}")]
    Pin(String),
    /// The module (shared library) could not be loaded or initialised.
    #[error("{0}")]
    Module(String),
    /// No token (or more than one) matches the URI: not connected, wrong label.
    #[error("{0}")]
    TokenNotFound(String),
    /// The token has no key under the URI's label (and this call may not create one).
    #[error("{0}")]
    KeyNotFound(String),
    /// The object under the label is not a usable KEK (type, length, attributes), or is not
    /// the key the data was wrapped with.
    #[error("{0}")]
    WrongKey(String),
    /// The token does not let Coffer create or destroy key objects (write-protected), so the
    /// KEK cannot get a new version there.
    #[error("{0}")]
    ReadOnly(String),
    /// Any other failure of the token.
    #[error("{0}")]
    Unavailable(String),
}

impl From<HsmError> for CryptoError {
    fn from(e: HsmError) -> CryptoError {
        CryptoError::KeyUnavailable(e.to_string())
    }
}

/// A cryptoki error in one short line: the function and the CKR code's name, or the library
/// loader's own message.
pub(crate) fn short(e: &cryptoki::error::Error) -> String {
    match e {
        cryptoki::error::Error::Pkcs11(rv, function) => format!("{function:?}: {rv:?}"),
        other => other.to_string(),
    }
}
