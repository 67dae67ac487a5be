//! Accounts' own KEKs in the instance KEK's token (`coffer account set-kek --kek pkcs11…`).
//!
//! A process loads a PKCS#11 module once, so an account's key object lives behind the
//! instance's [`Pkcs11Kek`]: the same module, token, login and session pool, and the same wrap
//! format (0x02, computed inside the token). Each account key is one more key object in the
//! pool, reached through [`Pkcs11Kek::version`] by its id like a KEK version, but *detachable*:
//! when it goes missing from the token, only the calls that need it fail (the pool stays up
//! for the instance KEK and every other account), where a missing KEK version breaks the pool.

use cryptoki::object::{Attribute, AttributeType};
use cryptoki::session::Session;

use coffer_crypto::{CryptoError, KekId};

use crate::pool::Lease;
use crate::token::{self, KeyObject};
use crate::{HsmError, Pkcs11Kek, Pkcs11Uri};

impl Pkcs11Kek {
    /// Generates an account's own KEK in the instance KEK's token, labelled `label` with
    /// CKA_ID `cka_id` (AES-256, sensitive, never extractable, as a KEK version), and starts
    /// using it as a detachable key. Nothing already in the token is destroyed.
    pub fn generate_account_key(&self, label: &str, cka_id: &[u8]) -> Result<KeyObject, HsmError> {
        let (handle, object) = self.generate_object(label, cka_id)?;
        self.pool.add_detachable_key(object.clone(), handle);
        Ok(object)
    }

    /// Takes an existing key object an operator named as an account's KEK. It must be in the
    /// instance KEK's module and token (one module per process, one login), be a usable
    /// AES-256 key (as the instance KEK: sensitive, may encrypt and decrypt with AES-GCM), and
    /// not be a key this instance already uses. The returned object carries the key's CKA_ID
    /// when it has one, so that it is found again by label and id.
    pub fn open_account_key(&self, uri: &Pkcs11Uri) -> Result<KeyObject, HsmError> {
        let ours = self.pool.uri();
        let same_module = match (
            std::fs::canonicalize(&uri.module_path),
            std::fs::canonicalize(&ours.module_path),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => uri.module_path == ours.module_path,
        };
        if !same_module {
            return Err(HsmError::Module(format!(
                "the key's URI names the PKCS#11 module {}, but the instance KEK is in {}: an \
                 account's key must be in the instance KEK's token (one module per process)",
                uri.module_path.display(),
                ours.module_path.display()
            )));
        }
        if uri.pin_source.is_some() {
            return Err(HsmError::Uri(crate::UriError(
                "an account key's URI takes no pin-source: the token is the instance KEK's, \
                 logged in with its PIN"
                    .to_owned(),
            )));
        }
        let token = uri.token_description();
        let (handle, object) = self.pool.with_ro_session(|session| {
            // Under a session of the pool, so no reconnect re-initialises the module meanwhile.
            let (module, live) = self.pool.module_and_slot();
            let Some(live) = live else {
                return Err(HsmError::Unavailable(format!(
                    "the instance KEK's PKCS#11 {} is unavailable",
                    ours.token_description()
                )));
            };
            if token::find_slot(module, uri)? != live {
                return Err(HsmError::TokenNotFound(format!(
                    "the key's URI names {token}, which is not the instance KEK's {}: an \
                     account's key must be in the instance KEK's token",
                    ours.token_description()
                )));
            }
            let Some(key) = token::find_key(session, uri, &token)? else {
                return Err(HsmError::KeyNotFound(format!(
                    "{token} has no object labelled {:?}{} (object= and id= in the key's URI)",
                    uri.object,
                    uri.id
                        .as_ref()
                        .map(|id| format!(" with id {}", hex::encode(id)))
                        .unwrap_or_default()
                )));
            };
            let kek_id = token::checked_id(session, key, &uri.object, &token)?;
            let cka_id = match &uri.id {
                Some(id) => Some(id.clone()),
                None => object_id(session, key),
            };
            Ok((
                key,
                KeyObject {
                    label: uri.object.clone(),
                    cka_id,
                    kek_id,
                },
            ))
        })?;
        if self.pool.has(&object.kek_id) {
            return Err(HsmError::WrongKey(format!(
                "the object labelled {:?} in {token} is KEK {}, which this instance already \
                 uses (its KEK or another account's); an account needs a key of its own",
                object.label, object.kek_id
            )));
        }
        self.pool.add_detachable_key(object.clone(), handle);
        Ok(object)
    }

    /// Finds a recorded account key object in the token (by label and CKA_ID, checked to be the
    /// key its id names) and starts using it as a detachable key.
    pub fn load_account_key(&self, object: &KeyObject) -> Result<(), HsmError> {
        let token = self.pool.uri().token_description();
        let handle = self
            .pool
            .with_ro_session(|session| token::load(session, object, &token))?;
        self.pool.add_detachable_key(object.clone(), handle);
        Ok(())
    }

    /// After a call with the key `key` failed and the probe on the same key failed too: if
    /// `key` is an account's (detachable) and the token, still answering on this session, no
    /// longer holds its object, the key is dropped and the error says so; the pool stays up.
    /// `None`: not such a case (the caller treats the token as gone).
    pub(crate) fn detached_if_gone(&self, lease: &Lease, key: &KekId) -> Option<CryptoError> {
        let object = self.pool.detachable(key)?;
        let token = self.pool.uri().token_description();
        match token::find_labelled(
            &lease.session,
            &object.label,
            object.cka_id.as_deref(),
            &token,
        ) {
            Ok(found) if found.is_empty() => {
                self.pool.remove_key(key);
                tracing::error!(
                    object = %object.describe(),
                    kek = %key,
                    "an account's key object is gone from the token; that account's values \
                     cannot be opened until it is restored"
                );
                Some(CryptoError::KeyUnavailable(format!(
                    "the key object {} (KEK {key}) is no longer in the PKCS#11 {token}",
                    object.describe()
                )))
            }
            _ => None,
        }
    }
}

/// The object's CKA_ID, if it has a non-empty one.
fn object_id(session: &Session, key: cryptoki::object::ObjectHandle) -> Option<Vec<u8>> {
    let attrs = session.get_attributes(key, &[AttributeType::Id]).ok()?;
    attrs.into_iter().find_map(|a| match a {
        Attribute::Id(id) if !id.is_empty() => Some(id),
        _ => None,
    })
}
