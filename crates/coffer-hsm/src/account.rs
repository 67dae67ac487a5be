//! Accounts' own KEKs in the instance KEK's token (`coffer account set-kek --kek pkcs11…`).
//!
//! A process loads a PKCS#11 module once, so an account's key object lives behind the
//! instance's [`Pkcs11Kek`]: the same module, token, login and session pool, and the same wrap
//! format (0x02, computed inside the token). Each account key is one more key object in the
//! pool, reached through [`Pkcs11Kek::version`] by its id like a KEK version, but *detachable*:
//! when it goes missing from the token, only the calls that need it fail (the pool stays up
//! for the instance KEK and every other account), where a missing KEK version breaks the pool.
//! A missing one is set aside as lost and looked for again (`pool.rs`), so it serves again
//! once its object is back. The instance's own [`KekProvider`](coffer_crypto::KekProvider)
//! never opens an account key's wraps, and no account call removes or destroys an instance key.

use coffer_crypto::{CryptoError, KekId};

use crate::token::{self, Holder, KeyObject};
use crate::{HsmError, Pkcs11Kek, Pkcs11Uri};

impl Pkcs11Kek {
    /// Generates an account's own KEK in the instance KEK's token, labelled `label` with
    /// CKA_ID `cka_id` (AES-256, sensitive, never extractable, as a KEK version), and starts
    /// using it as a detachable key. Nothing already in the token is destroyed.
    pub fn generate_account_key(&self, label: &str, cka_id: &[u8]) -> Result<KeyObject, HsmError> {
        let (handle, object, generation) = self.generate_object(label, cka_id, Holder::Account)?;
        self.pool
            .add_detachable_key(object.clone(), handle, generation)?;
        Ok(object)
    }

    /// Takes an existing key object an operator named as an account's KEK. It must be in the
    /// instance KEK's module and token (one module per process, one login), be a usable
    /// AES-256 key (as the instance KEK: sensitive, may encrypt and decrypt with AES-GCM),
    /// private (CKA_PRIVATE: only a logged-in session sees or uses it), have a CKA_ID (so that
    /// it is found again by label and id, never confused with another object under its label),
    /// keep its value in the token (not extractable, no CKA_WRAP, no CKA_DERIVE: see
    /// `token::check_account_key`), and not be a key this instance already uses or is looking
    /// for again (another account's lost key: taking it, even for a request refused later,
    /// would end that account's recovery).
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
        let ((handle, object), generation) = self.pool.with_ro_session_at(|session| {
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
            let kek_id = token::checked_id(session, key, &uri.object, &token, Holder::Account)?;
            if self.pool.has(&kek_id) || self.pool.is_detachable(&kek_id) {
                return Err(HsmError::WrongKey(format!(
                    "the object labelled {:?} in {token} is KEK {kek_id}, which this instance \
                     already uses (its KEK, or another account's key, in use or being looked for \
                     again after it went missing); an account needs a key of its own",
                    uri.object
                )));
            }
            let cka_id = token::check_account_key(session, key, &uri.object, &token)?;
            let cka_id = Some(uri.id.clone().unwrap_or(cka_id));
            Ok((
                key,
                KeyObject {
                    label: uri.object.clone(),
                    cka_id,
                    kek_id,
                },
            ))
        })?;
        self.pool
            .add_detachable_key(object.clone(), handle, generation)?;
        Ok(object)
    }

    /// Finds a recorded account key object in the token (by label and CKA_ID, checked to be the
    /// key its id names and to meet an account key's demands, as at set-kek) and starts using
    /// it as a detachable key.
    pub fn load_account_key(&self, object: &KeyObject) -> Result<(), HsmError> {
        if self.pool.has(&object.kek_id) && !self.pool.is_detachable(&object.kek_id) {
            return Err(HsmError::WrongKey(format!(
                "the key object {} is KEK {}, which is the instance KEK's; an account needs a \
                 key of its own",
                object.describe(),
                object.kek_id
            )));
        }
        let token = self.pool.uri().token_description();
        let (handle, generation) = self
            .pool
            .with_ro_session_at(|session| token::load(session, object, &token, Holder::Account))?;
        self.pool
            .add_detachable_key(object.clone(), handle, generation)
    }

    /// Stops using an account's key without touching the token. A key of the instance KEK is
    /// never affected (logged).
    pub fn forget_account_key(&self, id: &KekId) {
        if self.pool.remove_detachable(id).is_err() {
            tracing::warn!(kek = %id, "not forgetting KEK {id}: it is the instance KEK's, not an account's");
        }
    }

    /// [`Pkcs11Kek::destroy_version`] for an account's key: refused (nothing changes) when the
    /// key is one of the instance KEK's.
    pub fn destroy_account_key(&self, object: &KeyObject) -> Result<bool, HsmError> {
        if self.pool.has(&object.kek_id) && !self.pool.is_detachable(&object.kek_id) {
            return Err(HsmError::WrongKey(format!(
                "the key object {} is KEK {}, which is the instance KEK's; it is not an \
                 account's to destroy",
                object.describe(),
                object.kek_id
            )));
        }
        self.destroy_version(object)
    }

    /// If the account key `id` is lost (its object was missing or another key) and due for a
    /// look, looks for it again on a new session and uses it again when it is back.
    pub(crate) fn retry_lost(&self, id: &KekId) {
        let Some(object) = self.pool.lost_due(id) else {
            return;
        };
        let token = self.pool.uri().token_description();
        if let Ok((handle, generation)) = self
            .pool
            .with_ro_session_at(|session| token::load(session, &object, &token, Holder::Account))
        {
            self.pool.restore(&object, handle, generation);
        }
    }

    /// After a call with the key `key` failed and the probe on the same key failed too: if
    /// `key` is an account's (detachable) and a new logged-in session confirms that the token
    /// no longer holds its object, or that the object under its label and CKA_ID is now another
    /// key, the key is set aside as lost and the error says so; the pool stays up. The call's
    /// own session cannot tell: one that lost its login (token reset, HA failover) sees no
    /// private object at all.
    /// `None`: not such a case, or not confirmed (the caller breaks the pool, and the reconnect,
    /// logged in again, decides).
    pub(crate) fn detached_if_gone(&self, key: &KekId) -> Option<CryptoError> {
        let object = self.pool.detachable(key)?;
        let token = self.pool.uri().token_description();
        let verdict = self.pool.with_ro_session(|session| {
            if !token::logged_in(session) {
                return Ok(None);
            }
            let found =
                token::find_labelled(session, &object.label, object.cka_id.as_deref(), &token)?;
            if found.is_empty() {
                return Ok(Some("is no longer in"));
            }
            for handle in found {
                match token::key_id(session, handle) {
                    Ok(id) if id != *key => {}
                    // Still there (under a new handle), or the token cannot tell.
                    _ => return Ok(None),
                }
            }
            Ok(Some("holds another key in"))
        });
        let Ok(Some(what)) = verdict else {
            return None;
        };
        self.pool.detach(key);
        tracing::error!(
            object = %object.describe(),
            kek = %key,
            "an account's key object is gone from the token or holds another key; that \
             account's values cannot be opened until it is back (it is looked for again at \
             the account's next call and at each reconnect)"
        );
        Some(CryptoError::KeyUnavailable(format!(
            "the key object {} (KEK {key}) {what} the PKCS#11 {token}",
            object.describe()
        )))
    }
}
