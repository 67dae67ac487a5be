//! [`Pkcs11Kek`]: the [`KekProvider`] whose KEK is an AES-256 key inside a PKCS#11 token.
//!
//! DEKs are wrapped and unwrapped by the token itself with CKM_AES_GCM, the DEK's context as
//! AAD (the same AAD as a file KEK's wrap, docs/envelope-format.md). The wrapped form:
//!
//! ```text
//! 0x02 || nonce (12) || ciphertext (32) || tag (16)      61 bytes
//! ```
//!
//! The nonce is drawn here from the system CSPRNG (never the all-zero nonce of the key check
//! value), since PKCS#11 2.40 has the caller supply GCM's IV.
//!
//! Failures are told apart by asking the token: when a call fails, the same session computes
//! the key check value. If that works, the token is fine and the failure was the input's (a
//! corrupt or foreign wrapped key: the one opaque error); if it does not, the token is gone,
//! the pool breaks and reconnects later (`pool.rs`). Tokens differ in which CKR code a failed
//! tag check returns (SoftHSM says CKR_GENERAL_ERROR), so the code alone cannot decide.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use coffer_crypto::{CryptoError, DataKey, DekContext, KekId, KekProvider, WrappedDataKey};
use cryptoki::context::Pkcs11;
use zeroize::Zeroizing;

use crate::error::short;
use crate::pool::{Generation, Lease, Pool};
use crate::token::{self, Holder, KeyObject, KeyOrigin, NONCE_LEN, Want};
use crate::{HsmError, Pin, Pkcs11Uri};

/// The format byte of a DEK wrapped inside a PKCS#11 token.
pub const FORMAT_PKCS11: u8 = 0x02;
const TAG_LEN: usize = 16;
const DEK_LEN: usize = coffer_crypto::DATA_KEY_LEN;
/// The exact length of a wrapped DEK.
pub const WRAPPED_LEN: usize = 1 + NONCE_LEN + DEK_LEN + TAG_LEN;

/// How to reach the KEK.
#[derive(Debug)]
pub struct Pkcs11Config {
    pub uri: Pkcs11Uri,
    pub pin: Pin,
    /// Sessions in the pool: concurrent KEK calls beyond this wait for a free session.
    pub sessions: usize,
    /// While the token is unavailable, the least time between two reconnection attempts.
    pub reconnect_backoff: Duration,
}

impl Pkcs11Config {
    pub const DEFAULT_SESSIONS: usize = 4;
    pub const DEFAULT_RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

    pub fn new(uri: Pkcs11Uri, pin: Pin) -> Pkcs11Config {
        Pkcs11Config {
            uri,
            pin,
            sessions: Self::DEFAULT_SESSIONS,
            reconnect_backoff: Self::DEFAULT_RECONNECT_BACKOFF,
        }
    }
}

/// A KEK held in a PKCS#11 token. Its value never exists outside the token: Coffer holds a
/// handle and the token's user PIN (for logging in again after the token comes back).
///
/// It may hold several key objects (the KEK's versions, [`KeyObject`]): the
/// [`KekProvider`] of `Pkcs11Kek` itself wraps with the one it was opened with (the URI's, or
/// the last of [`Pkcs11Kek::open_versions`]) and unwraps with whichever of the KEK's versions a
/// wrapped key names, never with an account's key in the same pool (`account.rs`);
/// [`Pkcs11Kek::version`] gives a provider bound to one object.
pub struct Pkcs11Kek {
    pub(crate) pool: Pool,
    primary: KekId,
}

/// Refuses a module that is not an absolute path to a file, or that someone other than its
/// owner could have replaced: loading it runs its code in the server, with the PIN and a
/// logged-in session at hand, so the path in the data dir's `kek.toml` must not be a way for
/// whoever can write elsewhere to run code here.
fn check_module(path: &std::path::Path) -> Result<(), HsmError> {
    use std::os::unix::fs::PermissionsExt;
    let refuse = |why: &str| {
        Err(HsmError::Module(format!(
            "the PKCS#11 module {} {why} (check module-path in the KEK's URI)",
            path.display()
        )))
    };
    if !path.is_absolute() {
        return refuse("is not an absolute path");
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {
            if m.permissions().mode() & 0o022 != 0 {
                return refuse("is writable by its group or by others");
            }
        }
        _ => return refuse("does not exist or is not a file"),
    }
    // A directory anyone may write to, without the sticky bit, lets anyone swap the file.
    if let Some(dir) = path.parent()
        && std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o1002 == 0o002)
    {
        return refuse("is in a directory anyone may write to");
    }
    Ok(())
}

/// Loads and initialises the URI's module.
fn load_module(uri: &Pkcs11Uri) -> Result<Pkcs11, HsmError> {
    let path = &uri.module_path;
    check_module(path)?;
    // Loading runs the module's initialisers: it must be a PKCS#11 module the operator
    // trusts, which is what naming it in the configuration says.
    let module = Pkcs11::new(path).map_err(|e| {
        HsmError::Module(format!(
            "cannot load the PKCS#11 module {} ({}); check module-path in the KEK's URI",
            path.display(),
            short(&e)
        ))
    })?;
    token::initialize(&module, uri)?;
    Ok(module)
}

impl fmt::Debug for Pkcs11Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Kek")
            .field("uri", &self.pool.uri().to_string())
            .field("id", &self.primary)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Kek {
    /// Opens the KEK, which must exist in the token. With `expected`, also checks that it is
    /// that KEK (the one a data dir was initialised with).
    pub fn open(config: Pkcs11Config, expected: Option<&KekId>) -> Result<Pkcs11Kek, HsmError> {
        Self::connect(config, Want::Existing(expected)).map(|(kek, _)| kek)
    }

    /// Opens the KEK, generating it inside the token if the token has no object under the
    /// label (`coffer init`).
    pub fn open_or_generate(config: Pkcs11Config) -> Result<(Pkcs11Kek, KeyOrigin), HsmError> {
        Self::connect(config, Want::CreateIfMissing)
    }

    /// Opens the key objects `objects` (every live version of a KEK, oldest first), each of
    /// which must exist in the token and be the key its id names. The last one wraps.
    pub fn open_versions(
        config: Pkcs11Config,
        objects: &[KeyObject],
    ) -> Result<Pkcs11Kek, HsmError> {
        let Some(last) = objects.last() else {
            return Err(HsmError::KeyNotFound("no KEK version to open".into()));
        };
        let primary = last.kek_id.clone();
        let module = load_module(&config.uri)?;
        let token = config.uri.token_description();
        let opened = token::open_session(&module, &config.uri, &config.pin, false).and_then(
            |(slot, session)| {
                let keys = objects
                    .iter()
                    .map(|k| {
                        token::load(&session, k, &token, Holder::Instance).map(|h| (k.clone(), h))
                    })
                    .collect::<Result<Vec<_>, HsmError>>()?;
                Ok((slot, session, keys))
            },
        );
        let (slot, session, keys) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                let _ = module.finalize();
                return Err(e);
            }
        };
        let pool = Pool::new(
            module,
            config.uri,
            config.pin,
            slot,
            session,
            keys,
            config.sessions,
            config.reconnect_backoff,
        );
        Ok(Pkcs11Kek { pool, primary })
    }

    fn connect(config: Pkcs11Config, want: Want<'_>) -> Result<(Pkcs11Kek, KeyOrigin), HsmError> {
        let module = load_module(&config.uri)?;
        let connected = match token::connect(&module, &config.uri, &config.pin, want) {
            Ok(connected) => connected,
            Err(e) => {
                let _ = module.finalize();
                return Err(e);
            }
        };
        let origin = connected.origin;
        let object = KeyObject {
            label: config.uri.object.clone(),
            cka_id: config.uri.id.clone(),
            kek_id: connected.id.clone(),
        };
        let pool = Pool::new(
            module,
            config.uri,
            config.pin,
            connected.slot,
            connected.session,
            vec![(object, connected.key)],
            config.sessions,
            config.reconnect_backoff,
        );
        Ok((
            Pkcs11Kek {
                pool,
                primary: connected.id,
            },
            origin,
        ))
    }

    /// The KEK's key objects in use (versions not destroyed), in the order they were added;
    /// accounts' keys in the same token are not among them.
    pub fn objects(&self) -> Vec<KeyObject> {
        self.pool.instance_keys()
    }

    /// The accounts' key objects in use (not those lost from the token).
    pub fn account_objects(&self) -> Vec<KeyObject> {
        let instance = self.pool.instance_keys();
        self.pool
            .keys()
            .into_iter()
            .filter(|k| !instance.contains(k))
            .collect()
    }

    /// A provider bound to the key object `id` (which must be in use): wraps and unwraps with
    /// it only.
    pub fn version(self: &Arc<Self>, id: &KekId) -> Option<Pkcs11KeyVersion> {
        self.pool.has(id).then(|| Pkcs11KeyVersion {
            kek: Arc::clone(self),
            id: id.clone(),
        })
    }

    /// Generates a new key object labelled `label` with CKA_ID `cka_id` in the token (AES-256,
    /// sensitive, never extractable) and starts using it. Nothing already in the token is
    /// destroyed: an object under `label` may belong to another deployment sharing the label
    /// (kept apart by CKA_ID), and one left by an interrupted earlier attempt is an unused key
    /// that nothing was wrapped by. Every later lookup is by label, CKA_ID and class, so such
    /// objects coexist with the new one. Refused when a key in use is under `label` (a second
    /// object there would make it ambiguous or shadow it).
    pub fn generate_version(&self, label: &str, cka_id: &[u8]) -> Result<KeyObject, HsmError> {
        let (handle, object, generation) = self.generate_object(label, cka_id, Holder::Instance)?;
        self.pool.add_key(object.clone(), handle, generation)?;
        Ok(object)
    }

    /// [`Pkcs11Kek::generate_version`]'s checks and generation, without using the key yet.
    pub(crate) fn generate_object(
        &self,
        label: &str,
        cka_id: &[u8],
        holder: Holder,
    ) -> Result<(cryptoki::object::ObjectHandle, KeyObject, Generation), HsmError> {
        let token = self.pool.uri().token_description();
        let in_use = self.pool.keys();
        if let Some(k) = in_use
            .iter()
            .find(|k| k.label == label && k.cka_id.is_none())
        {
            return Err(HsmError::WrongKey(format!(
                "{token} has KEK {} labelled {label:?} in use without a CKA_ID; no other \
                 object is made under that label",
                k.kek_id
            )));
        }
        let ((handle, object), generation) = self.pool.with_rw_session_at(|session| {
            let present = token::find_labelled(session, label, None, &token)?;
            for &found in &present {
                let id = token::key_id(session, found).ok();
                if let Some(id) = id.filter(|id| in_use.iter().any(|k| k.kek_id == *id)) {
                    return Err(HsmError::WrongKey(format!(
                        "{token} already has an object labelled {label:?} that is KEK {id}, \
                         which is in use; it is left as it is"
                    )));
                }
            }
            if !present.is_empty() {
                tracing::info!(
                    label = %label,
                    objects = present.len(),
                    "the token already holds key objects under the new KEK version's label \
                     (another deployment's, or unused ones of an interrupted rotation); they \
                     are left as they are"
                );
            }
            token::generate_object(session, label, cka_id, &token, holder)
        })?;
        Ok((handle, object, generation))
    }

    /// Stops using `object` without touching the token: for a version whose record is
    /// uncertain, so that the pool holds only what the ring uses (a later start loads it
    /// again if the record names it).
    pub fn forget_version(&self, id: &KekId) {
        self.pool.remove_key(id);
    }

    /// Stops using `object` and destroys it in the token (C_DestroyObject). Returns whether
    /// the token held it. Only a secret key under its label (and CKA_ID, when recorded) whose
    /// key check value is `object`'s KEK id is destroyed; any other object there (another
    /// deployment's key, a certificate, a data object) is left as it is. The token is
    /// searched before the key leaves the pool, so a failed search changes nothing.
    pub fn destroy_version(&self, object: &KeyObject) -> Result<bool, HsmError> {
        let token = self.pool.uri().token_description();
        self.pool.with_rw_session(|session| {
            let found =
                token::find_labelled(session, &object.label, object.cka_id.as_deref(), &token)?;
            let mut ours = Vec::new();
            for key in found {
                match token::key_id(session, key) {
                    Ok(id) if id == object.kek_id => ours.push(key),
                    _ => tracing::warn!(
                        object = %object.describe(),
                        kek = %object.kek_id,
                        "a key object under this KEK version's label is not its key (or cannot be \
                         checked); it is left as it is"
                    ),
                }
            }
            self.pool.remove_key(&object.kek_id);
            for &key in &ours {
                token::destroy(session, key, &object.label, &token)?;
            }
            Ok(!ours.is_empty())
        })
    }

    /// Whether the token holds an object under `object`'s label and CKA_ID.
    pub fn holds(&self, object: &KeyObject) -> Result<bool, HsmError> {
        let token = self.pool.uri().token_description();
        self.pool.with_rw_session(|session| {
            Ok(
                !token::find_labelled(session, &object.label, object.cka_id.as_deref(), &token)?
                    .is_empty(),
            )
        })
    }

    /// The URI this KEK was opened with, in canonical form.
    pub fn uri(&self) -> &Pkcs11Uri {
        self.pool.uri()
    }

    /// Sessions open now, and the most that were ever open at once.
    pub fn sessions(&self) -> (usize, usize) {
        self.pool.sessions()
    }

    /// How many times the session pool reconnected to the token (logged in again, every key
    /// object found anew). For tests that a failure did or did not rebuild the pool.
    #[cfg(feature = "test-support")]
    pub fn reconnects(&self) -> u64 {
        self.pool.reconnects()
    }

    /// Takes a session out of the pool until the returned guard drops, as a concurrent call
    /// would; fails rather than waits when every session is busy. For tests of the pool.
    #[cfg(feature = "test-support")]
    pub fn hold_session(&self) -> Result<HeldSession<'_>, CryptoError> {
        let lease = self
            .pool
            .take_now(&self.primary)
            .map_err(|e| self.unavailable(&e))?;
        Ok(HeldSession {
            pool: &self.pool,
            lease: Some(lease),
        })
    }

    /// Logs the process out of the token (C_Logout: every session loses the login), as a
    /// token reset or an HA failover would. For tests of what a call then concludes.
    #[cfg(feature = "test-support")]
    pub fn log_out(&self) -> Result<(), HsmError> {
        self.pool.with_ro_session(|session| {
            session
                .logout()
                .map_err(|e| HsmError::Unavailable(format!("cannot log out: {}", short(&e))))
        })
    }

    fn unavailable(&self, reason: &str) -> CryptoError {
        CryptoError::KeyUnavailable(format!(
            "the PKCS#11 {} is unavailable: {reason}",
            self.pool.uri().token_description()
        ))
    }

    /// Runs `op` on a pooled session. On failure, probes the token on the same session: a
    /// healthy token means the failure was the input's (`Ok(Err(e))`), a failed probe breaks
    /// the pool (`Err`).
    fn call<T>(
        &self,
        key: &KekId,
        op: impl FnOnce(&Lease) -> Result<T, cryptoki::error::Error>,
    ) -> Result<Result<T, cryptoki::error::Error>, CryptoError> {
        self.retry_lost(key);
        let lease = self.pool.take(key).map_err(|e| self.unavailable(&e))?;
        match op(&lease) {
            Ok(value) => {
                self.pool.give_back(lease, Ok(()));
                Ok(Ok(value))
            }
            Err(e) => match token::key_id(&lease.session, lease.key) {
                Ok(id) if id == *key => {
                    self.pool.give_back(lease, Ok(()));
                    Ok(Err(e))
                }
                probe => {
                    if let Some(gone) = self.detached_if_gone(key) {
                        self.pool.give_back(lease, Ok(()));
                        return Err(gone);
                    }
                    let reason = match probe {
                        Ok(other) => format!("the key object of KEK {key} is now KEK {other}"),
                        Err(probe) => format!("{} (then {})", short(&e), short(&probe)),
                    };
                    self.pool.give_back(lease, Err(reason.clone()));
                    Err(self.unavailable(&reason))
                }
            },
        }
    }
}

/// A session held out of the pool (see [`Pkcs11Kek::hold_session`]).
#[cfg(feature = "test-support")]
pub struct HeldSession<'a> {
    pool: &'a Pool,
    lease: Option<Lease>,
}

#[cfg(feature = "test-support")]
impl fmt::Debug for HeldSession<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HeldSession")
    }
}

#[cfg(feature = "test-support")]
impl Drop for HeldSession<'_> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.pool.give_back(lease, Ok(()));
        }
    }
}

impl Pkcs11Kek {
    fn wrap_with(
        &self,
        id: &KekId,
        key: &DataKey,
        ctx: &DekContext<'_>,
    ) -> Result<WrappedDataKey, CryptoError> {
        let aad = ctx.aad()?;
        let mut nonce: [u8; NONCE_LEN] = coffer_crypto::random_array();
        while nonce == token::CHECK_NONCE {
            nonce = coffer_crypto::random_array();
        }
        let sealed = self.call(id, |lease| {
            let mut iv = nonce;
            token::encrypt(
                &lease.session,
                lease.key,
                &mut iv,
                &aad,
                key.expose_secret(),
            )
        })?;
        let sealed = sealed.map_err(|e| {
            // The token is healthy but would not encrypt: a mechanism or policy problem, not
            // something a retry fixes.
            CryptoError::KeyUnavailable(format!(
                "the PKCS#11 token refused to wrap a key: {}",
                short(&e)
            ))
        })?;
        if sealed.len() != DEK_LEN + TAG_LEN {
            return Err(CryptoError::KeyUnavailable(format!(
                "the PKCS#11 token returned {} bytes for a wrapped key, not {}",
                sealed.len(),
                DEK_LEN + TAG_LEN
            )));
        }
        let mut bytes = Vec::with_capacity(WRAPPED_LEN);
        bytes.push(FORMAT_PKCS11);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        Ok(WrappedDataKey {
            kek_id: id.clone(),
            bytes,
        })
    }

    fn unwrap_known(
        &self,
        wrapped: &WrappedDataKey,
        ctx: &DekContext<'_>,
    ) -> Result<DataKey, CryptoError> {
        self.retry_lost(&wrapped.kek_id);
        if !self.pool.has(&wrapped.kek_id) {
            return Err(CryptoError::KeyUnavailable(
                match self.pool.lost(&wrapped.kek_id) {
                    Some(object) => format!(
                        "key was wrapped by KEK {}, whose key object {} is not usable in the \
                     PKCS#11 {} (missing or another key)",
                        wrapped.kek_id,
                        object.describe(),
                        self.pool.uri().token_description()
                    ),
                    None => format!(
                        "key was wrapped by KEK {}, but only KEK {} (PKCS#11 {}) is loaded",
                        wrapped.kek_id,
                        self.objects()
                            .iter()
                            .map(|k| k.kek_id.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                        self.pool.uri().token_description()
                    ),
                },
            ));
        }
        let aad = ctx.aad()?;
        let bytes = &wrapped.bytes;
        if bytes.len() != WRAPPED_LEN || bytes[0] != FORMAT_PKCS11 {
            return Err(CryptoError::Opaque);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[1..1 + NONCE_LEN]);
        let body = &bytes[1 + NONCE_LEN..];
        let opened = self.call(&wrapped.kek_id, |lease| {
            let mut iv = nonce;
            token::decrypt(&lease.session, lease.key, &mut iv, &aad, body).map(Zeroizing::new)
        })?;
        // A healthy token that would not open it: wrong context, tampered, another key.
        let plain = opened.map_err(|_| CryptoError::Opaque)?;
        DataKey::from_slice(&plain).map_err(|_| CryptoError::Opaque)
    }
}

impl KekProvider for Pkcs11Kek {
    fn current_kek_id(&self) -> KekId {
        self.primary.clone()
    }

    fn wrap(&self, key: &DataKey, ctx: &DekContext<'_>) -> Result<WrappedDataKey, CryptoError> {
        self.wrap_with(&self.primary, key, ctx)
    }

    fn unwrap(
        &self,
        wrapped: &WrappedDataKey,
        ctx: &DekContext<'_>,
    ) -> Result<DataKey, CryptoError> {
        // An account's key shares the pool, but its wraps are opened only through its own
        // provider (`version`): the instance KEK opening them would bypass the account's KEK.
        if self.pool.is_detachable(&wrapped.kek_id) {
            let loaded: Vec<String> = self
                .objects()
                .iter()
                .map(|k| k.kek_id.to_string())
                .collect();
            return Err(CryptoError::KeyUnavailable(format!(
                "key was wrapped by KEK {}, an account's key, not by the instance KEK ({})",
                wrapped.kek_id,
                loaded.join(", ")
            )));
        }
        self.unwrap_known(wrapped, ctx)
    }
}

/// One key object of a [`Pkcs11Kek`] as a [`KekProvider`]: a KEK version.
pub struct Pkcs11KeyVersion {
    kek: Arc<Pkcs11Kek>,
    id: KekId,
}

impl fmt::Debug for Pkcs11KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11KeyVersion")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl KekProvider for Pkcs11KeyVersion {
    fn current_kek_id(&self) -> KekId {
        self.id.clone()
    }

    fn wrap(&self, key: &DataKey, ctx: &DekContext<'_>) -> Result<WrappedDataKey, CryptoError> {
        self.kek.wrap_with(&self.id, key, ctx)
    }

    fn unwrap(
        &self,
        wrapped: &WrappedDataKey,
        ctx: &DekContext<'_>,
    ) -> Result<DataKey, CryptoError> {
        if wrapped.kek_id != self.id {
            return Err(CryptoError::KeyUnavailable(format!(
                "key was wrapped by KEK {}, not by KEK {}",
                wrapped.kek_id, self.id
            )));
        }
        self.kek.unwrap_known(wrapped, ctx)
    }
}

#[cfg(test)]
mod module_checks {
    use super::check_module;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_an_absolute_file_only_its_owner_may_write_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("p11.so");
        std::fs::write(&module, b"not really a module").unwrap();
        std::fs::set_permissions(&module, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_module(&module).is_ok());
        for bad in [
            std::path::PathBuf::from("p11.so"),
            std::path::PathBuf::from("./p11.so"),
            dir.path().join("missing.so"),
            dir.path().to_owned(),
        ] {
            assert!(check_module(&bad).is_err(), "{}", bad.display());
        }
        std::fs::set_permissions(&module, std::fs::Permissions::from_mode(0o664)).unwrap();
        let err = check_module(&module).unwrap_err().to_string();
        assert!(err.contains("writable by its group"), "{err}");
        std::fs::set_permissions(&module, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_module(&module).unwrap_err().to_string();
        assert!(err.contains("anyone may write"), "{err}");
    }
}
