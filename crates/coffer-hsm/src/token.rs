//! Talking to the token: finding it, logging in, finding (or generating) the KEK, checking
//! that it is a usable AES-256 key, and the GCM calls that wrap and unwrap inside it.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use coffer_crypto::KekId;

use crate::error::short;
use crate::{HsmError, Pin, Pkcs11Uri};

/// AES-256.
pub(crate) const KEY_LEN: u64 = 32;
pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_BITS: u64 = 128;
pub(crate) const KEK_ID_PREFIX: &str = "pkcs11:";

/// The key check value's inputs. The id is the first 8 bytes of the GCM tag over this AAD and
/// an empty plaintext under the all-zero nonce: a fingerprint only the key can produce, equal
/// wherever the same key lives (a restored backup in another HSM keeps its id). Wraps never
/// use the all-zero nonce (`provider.rs` redraws it), so this nonce never meets real data.
pub(crate) const CHECK_NONCE: [u8; NONCE_LEN] = [0; NONCE_LEN];
const CHECK_AAD: &[u8] = b"coffer/kek-id/v1";
const KEK_ID_LEN: usize = 8;

/// Whether the key may be generated when the token lacks it (`coffer init`) or must exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want<'a> {
    Existing(Option<&'a KekId>),
    CreateIfMissing,
}

/// Whose key an object is, for the checks it must pass: the instance KEK's versions, or an
/// account's own key (which must also pass [`check_account_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    Instance,
    Account,
}

/// Whether `coffer init` found the key or made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    Existing,
    Generated,
}

/// A logged-in connection to the token: the KEK's handle (valid in every session of this
/// connection) and the first session, which the pool keeps.
pub(crate) struct Connected {
    pub slot: Slot,
    pub key: ObjectHandle,
    pub id: KekId,
    pub origin: KeyOrigin,
    pub session: Session,
}

/// One AES key object of the KEK in the token: a version. Found by label (and CKA_ID when
/// given), and checked to be the key `kek_id` names before it is used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyObject {
    /// CKA_LABEL.
    pub label: String,
    /// CKA_ID, when the object has one to tell it apart.
    pub cka_id: Option<Vec<u8>>,
    /// Its key check value (see [`CHECK_NONCE`]).
    pub kek_id: KekId,
}

impl KeyObject {
    /// The object for messages: `"coffer-kek.v2" (id 0a1b…)`.
    pub fn describe(&self) -> String {
        match &self.cka_id {
            Some(id) => format!("{:?} (id {})", self.label, hex::encode(id)),
            None => format!("{:?}", self.label),
        }
    }
}

pub(crate) fn initialize(module: &Pkcs11, uri: &Pkcs11Uri) -> Result<(), HsmError> {
    match module.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => Ok(()),
        Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
            Err(HsmError::Module(format!(
                "the PKCS#11 module {} is already initialised in this process (one PKCS#11 KEK \
                 per module per process)",
                uri.module_path.display()
            )))
        }
        Err(e) => Err(HsmError::Module(format!(
            "cannot initialise the PKCS#11 module {}: {} (check module-path in the KEK's URI)",
            uri.module_path.display(),
            short(&e)
        ))),
    }
}

/// Finalizes and initialises the module again, so that it looks for its tokens afresh (some
/// modules, SoftHSM among them, see a token that went away again only after this). Every
/// session of the old connection must be gone: their handles would be reused.
pub(crate) fn reinitialize(module: &Pkcs11, uri: &Pkcs11Uri) -> Result<(), HsmError> {
    // Fails only if the module was not initialised, which is what we want anyway.
    let _ = module.clone().finalize();
    initialize(module, uri)
}

/// Finds the token and logs in on a new session (read-write to create or destroy objects).
pub(crate) fn open_session(
    module: &Pkcs11,
    uri: &Pkcs11Uri,
    pin: &Pin,
    rw: bool,
) -> Result<(Slot, Session), HsmError> {
    let token = uri.token_description();
    let slot = find_slot(module, uri)?;
    let session = if rw {
        module.open_rw_session(slot)
    } else {
        module.open_ro_session(slot)
    }
    .map_err(|e| {
        HsmError::Unavailable(format!("cannot open a session with {token}: {}", short(&e)))
    })?;
    login(&session, pin, &token)?;
    Ok((slot, session))
}

/// Finds the token, logs in and finds (or generates) the KEK. The module must be initialised.
pub(crate) fn connect(
    module: &Pkcs11,
    uri: &Pkcs11Uri,
    pin: &Pin,
    want: Want<'_>,
) -> Result<Connected, HsmError> {
    let token = uri.token_description();
    // Generating a token object needs a read-write session; using a key does not.
    let (slot, session) = open_session(module, uri, pin, want == Want::CreateIfMissing)?;
    let (key, origin) = match find_key(&session, uri, &token)? {
        Some(key) => (key, KeyOrigin::Existing),
        None if want == Want::CreateIfMissing => (
            generate(&session, &uri.object, uri.id.as_deref(), &token)?,
            KeyOrigin::Generated,
        ),
        None => {
            return Err(HsmError::KeyNotFound(format!(
                "{token} has no key labelled {:?}{} (object= in the KEK's URI); `coffer init \
                 --kek` generates it, a running server never does",
                uri.object,
                id_suffix(uri)
            )));
        }
    };
    let id = checked_id(&session, key, &uri.object, &token, Holder::Instance)?;
    if let Want::Existing(Some(expected)) = want
        && *expected != id
    {
        return Err(HsmError::WrongKey(format!(
            "the key labelled {:?} in {token} is KEK {id}, but this data dir was initialised \
             with KEK {expected}; check token= and object= in the KEK's URI",
            uri.object
        )));
    }
    Ok(Connected {
        slot,
        key,
        id,
        origin,
        session,
    })
}

/// Checks that `key` is a usable KEK and computes its id. An instance KEK that is
/// extractable is allowed, with a warning; an account's key is refused for it by
/// [`check_account_key`], which the caller runs.
pub(crate) fn checked_id(
    session: &Session,
    key: ObjectHandle,
    label: &str,
    token: &str,
    holder: Holder,
) -> Result<KekId, HsmError> {
    let extractable = check_attributes(session, key, label, token)?;
    if extractable && holder == Holder::Instance {
        // Allowed: an HSM's backup procedure may need the key wrappable under a backup key.
        // Its value still never reaches Coffer (it is sensitive).
        tracing::warn!(
            label = %label,
            "the KEK is extractable (CKA_EXTRACTABLE true): whoever holds the PIN can wrap it \
             out of the token under another key"
        );
    }
    key_id(session, key).map_err(|e| {
        HsmError::WrongKey(format!(
            "the key labelled {label:?} in {token} cannot encrypt with AES-GCM ({}); it must \
             allow CKM_AES_GCM with a caller-supplied IV",
            short(&e)
        ))
    })
}

/// The secret-key objects labelled `label` (with CKA_ID `id` when given). Objects of other
/// classes under the label (certificates, data objects) are never Coffer's.
pub(crate) fn find_labelled(
    session: &Session,
    label: &str,
    id: Option<&[u8]>,
    token: &str,
) -> Result<Vec<ObjectHandle>, HsmError> {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    if let Some(id) = id {
        template.push(Attribute::Id(id.to_vec()));
    }
    session.find_objects(&template).map_err(|e| {
        HsmError::Unavailable(format!(
            "cannot search {token} for objects labelled {label:?}: {}",
            short(&e)
        ))
    })
}

/// Finds `object` in the token and checks that it is the key its id names, and, for an
/// account's key, that it still meets an account key's demands ([`check_account_key`]): at
/// start, at each reconnect and whenever a lost one is looked for again.
pub(crate) fn load(
    session: &Session,
    object: &KeyObject,
    token: &str,
    holder: Holder,
) -> Result<ObjectHandle, HsmError> {
    let found = find_labelled(session, &object.label, object.cka_id.as_deref(), token)?;
    let key = match found.as_slice() {
        [key] => *key,
        [] => {
            return Err(HsmError::KeyNotFound(format!(
                "{token} has no key object {} (KEK {}); restore it from the token's backup \
                 (docs/key-hierarchy.md, \"Break-glass\")",
                object.describe(),
                object.kek_id
            )));
        }
        many => {
            return Err(HsmError::WrongKey(format!(
                "{} objects in {token} match {}; only one may",
                many.len(),
                object.describe()
            )));
        }
    };
    let id = checked_id(session, key, &object.label, token, holder)?;
    if holder == Holder::Account {
        check_account_key(session, key, &object.label, token)?;
    }
    if id != object.kek_id {
        return Err(HsmError::WrongKey(format!(
            "the key object {} in {token} is KEK {id}, but this data dir records it as KEK {}",
            object.describe(),
            object.kek_id
        )));
    }
    Ok(key)
}

/// Generates a new KEK object labelled `label` with CKA_ID `id` and returns it checked.
pub(crate) fn generate_object(
    session: &Session,
    label: &str,
    id: &[u8],
    token: &str,
    holder: Holder,
) -> Result<(ObjectHandle, KeyObject), HsmError> {
    let key = generate(session, label, Some(id), token)?;
    let kek_id = checked_id(session, key, label, token, holder)?;
    if holder == Holder::Account {
        check_account_key(session, key, label, token)?;
    }
    Ok((
        key,
        KeyObject {
            label: label.to_owned(),
            cka_id: Some(id.to_vec()),
            kek_id,
        },
    ))
}

/// Destroys a key object (C_DestroyObject).
pub(crate) fn destroy(
    session: &Session,
    key: ObjectHandle,
    label: &str,
    token: &str,
) -> Result<(), HsmError> {
    session.destroy_object(key).map_err(|e| {
        HsmError::Unavailable(format!(
            "cannot destroy the key object labelled {label:?} in {token}: {}",
            short(&e)
        ))
    })
}

fn id_suffix(uri: &Pkcs11Uri) -> String {
    match &uri.id {
        Some(id) => format!(" with id {}", hex::encode(id)),
        None => String::new(),
    }
}

pub(crate) fn find_slot(module: &Pkcs11, uri: &Pkcs11Uri) -> Result<Slot, HsmError> {
    let token = uri.token_description();
    let module_path = uri.module_path.display();
    let slots = module.get_slots_with_token().map_err(|e| {
        HsmError::TokenNotFound(format!(
            "cannot list the tokens of PKCS#11 module {module_path}: {}",
            short(&e)
        ))
    })?;
    let mut found = Vec::new();
    let mut present = Vec::new();
    for slot in slots {
        // A slot whose token cannot be read (removed meanwhile) is not ours.
        let Ok(info) = module.get_token_info(slot) else {
            continue;
        };
        let fields = crate::uri::TokenFields {
            label: info.label(),
            manufacturer: info.manufacturer_id(),
            serial: info.serial_number(),
            model: info.model(),
            slot_id: slot.id(),
        };
        if !info.token_initialized() {
            continue;
        }
        present.push(format!("{:?}", info.label().trim_end()));
        if uri.matches_token(&fields) {
            found.push(slot);
        }
    }
    match found.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(HsmError::TokenNotFound(format!(
            "no {token} in PKCS#11 module {module_path} (tokens present: {}); check token= in \
             the KEK's URI and that the HSM is connected",
            if present.is_empty() {
                "none".to_owned()
            } else {
                present.join(", ")
            }
        ))),
        many => Err(HsmError::TokenNotFound(format!(
            "{} tokens in PKCS#11 module {module_path} match {token}; add serial= to the KEK's \
             URI to choose one",
            many.len()
        ))),
    }
}

fn login(session: &Session, pin: &Pin, token: &str) -> Result<(), HsmError> {
    let auth = AuthPin::from(pin.expose_secret().to_owned());
    match session.login(UserType::User, Some(&auth)) {
        // Login state is per application and token: another session of ours already did it.
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(rv @ (RvError::PinIncorrect | RvError::PinLenRange), _)) => {
            Err(HsmError::Pin(format!(
                "{token} refused the user PIN ({rv:?}); check {}",
                pin.source()
            )))
        }
        Err(CkError::Pkcs11(rv @ (RvError::PinLocked | RvError::PinExpired), _)) => {
            Err(HsmError::Pin(format!(
                "the user PIN of {token} is unusable ({rv:?}); unlock or reset it with the \
                 token's security officer"
            )))
        }
        Err(CkError::Pkcs11(RvError::UserPinNotInitialized, _)) => Err(HsmError::Pin(format!(
            "{token} has no user PIN yet; initialise it (softhsm2-util --init-token, or the \
             HSM's tools)"
        ))),
        Err(e) => Err(HsmError::Unavailable(format!(
            "cannot log in to {token}: {}",
            short(&e)
        ))),
    }
}

pub(crate) fn find_key(
    session: &Session,
    uri: &Pkcs11Uri,
    token: &str,
) -> Result<Option<ObjectHandle>, HsmError> {
    // Any class: an object of another kind under the configured label is refused by name
    // (check_attributes), never generated over.
    let mut template = vec![Attribute::Label(uri.object.as_bytes().to_vec())];
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    let found = session.find_objects(&template).map_err(|e| {
        HsmError::Unavailable(format!("cannot search {token} for the KEK: {}", short(&e)))
    })?;
    match found.as_slice() {
        [] => Ok(None),
        [key] => Ok(Some(*key)),
        many => Err(HsmError::WrongKey(format!(
            "{} objects in {token} are labelled {:?}{}; add id= to the KEK's URI to choose one",
            many.len(),
            uri.object,
            id_suffix(uri)
        ))),
    }
}

/// Generates the KEK inside the token: AES-256, a token object, sensitive and never
/// extractable, usable only to encrypt and decrypt. Its value never leaves the token.
fn generate(
    session: &Session,
    label: &str,
    id: Option<&[u8]>,
    token: &str,
) -> Result<ObjectHandle, HsmError> {
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(KEY_LEN.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    if let Some(id) = id {
        template.push(Attribute::Id(id.to_vec()));
    }
    let key = session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .map_err(|e| {
            HsmError::Unavailable(format!(
                "cannot generate an AES-256 key labelled {label:?} in {token}: {}",
                short(&e)
            ))
        })?;
    tracing::info!(label = %label, "generated a KEK inside the token");
    Ok(key)
}

/// Refuses an object that is not an AES-256 secret key allowed to encrypt and decrypt, or whose
/// value the token would reveal (CKA_SENSITIVE false). Returns whether it is extractable
/// (CKA_EXTRACTABLE not false), which the caller judges.
fn check_attributes(
    session: &Session,
    key: ObjectHandle,
    label: &str,
    token: &str,
) -> Result<bool, HsmError> {
    let attrs = session
        .get_attributes(
            key,
            &[
                AttributeType::Class,
                AttributeType::KeyType,
                AttributeType::ValueLen,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Encrypt,
                AttributeType::Decrypt,
            ],
        )
        .map_err(|e| {
            HsmError::Unavailable(format!(
                "cannot read the attributes of the KEK in {token}: {}",
                short(&e)
            ))
        })?;
    let (mut class, mut key_type, mut len) = (None, None, None);
    let (mut sensitive, mut extractable, mut encrypt, mut decrypt) = (None, None, None, None);
    for attr in attrs {
        match attr {
            Attribute::Class(c) => class = Some(c),
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::ValueLen(l) => len = Some(*l),
            Attribute::Sensitive(b) => sensitive = Some(b),
            Attribute::Extractable(b) => extractable = Some(b),
            Attribute::Encrypt(b) => encrypt = Some(b),
            Attribute::Decrypt(b) => decrypt = Some(b),
            _ => {}
        }
    }
    let what = format!("the object labelled {label:?} in {token}");
    let fix = "give another object= in the KEK's URI (`coffer init --kek` generates a fitting \
               key when the label is free; for an account, `coffer account set-kek --kek \
               pkcs11` does)";
    if class != Some(ObjectClass::SECRET_KEY) {
        let class = class.map_or("an unknown kind of".to_owned(), |c| format!("a {c}"));
        return Err(HsmError::WrongKey(format!(
            "{what} is {class} object, not a secret key; the KEK must be an AES-256 key; {fix}"
        )));
    }
    if key_type != Some(KeyType::AES) {
        let kind = key_type.map_or("an unknown".to_owned(), |t| format!("a {t}"));
        return Err(HsmError::WrongKey(format!(
            "{what} is {kind} key, not AES; the KEK must be an AES-256 key; {fix}"
        )));
    }
    if len != Some(KEY_LEN) {
        let size = len.map_or("of unknown length".to_owned(), |l| {
            format!("{l} bytes long")
        });
        return Err(HsmError::WrongKey(format!(
            "{what} is an AES key {size}; the KEK must be AES-256 (32 bytes); {fix}"
        )));
    }
    if sensitive != Some(true) {
        return Err(HsmError::WrongKey(format!(
            "{what} is not sensitive (CKA_SENSITIVE is not true), so the token would reveal its \
             value; {fix}"
        )));
    }
    if encrypt != Some(true) || decrypt != Some(true) {
        return Err(HsmError::WrongKey(format!(
            "{what} may not encrypt and decrypt (CKA_ENCRYPT and CKA_DECRYPT must be true); {fix}"
        )));
    }
    Ok(extractable != Some(false))
}

/// The extra demands on an account's key object (one an operator names, checked again
/// whenever it is loaded): it must be private (CKA_PRIVATE true: a session that is not logged
/// in neither sees nor uses it); have a non-empty CKA_ID (so that it is found again by label
/// and id, and another object under its label is never taken for it); and keep its value in
/// the token: not extractable (CKA_EXTRACTABLE: it could be wrapped out under another key),
/// not a wrapping key (CKA_WRAP: any extractable key wrapped under it could then be decrypted
/// with it, since it may decrypt), not a base for derivation (CKA_DERIVE: a derived key may be
/// made readable). Returns the CKA_ID.
pub(crate) fn check_account_key(
    session: &Session,
    key: ObjectHandle,
    label: &str,
    token: &str,
) -> Result<Vec<u8>, HsmError> {
    let attrs = session
        .get_attributes(
            key,
            &[
                AttributeType::Private,
                AttributeType::Id,
                AttributeType::Extractable,
                AttributeType::Wrap,
                AttributeType::Derive,
            ],
        )
        .map_err(|e| {
            HsmError::Unavailable(format!(
                "cannot read the attributes of the object labelled {label:?} in {token}: {}",
                short(&e)
            ))
        })?;
    let (mut private, mut id) = (None, None);
    let (mut extractable, mut wrap, mut derive) = (None, None, None);
    for attr in attrs {
        match attr {
            Attribute::Private(b) => private = Some(b),
            Attribute::Id(i) if !i.is_empty() => id = Some(i),
            Attribute::Extractable(b) => extractable = Some(b),
            Attribute::Wrap(b) => wrap = Some(b),
            Attribute::Derive(b) => derive = Some(b),
            _ => {}
        }
    }
    let what = format!("the object labelled {label:?} in {token}");
    let fix = "name another object, or let `coffer account set-kek --kek pkcs11` generate one";
    if private != Some(true) {
        return Err(HsmError::WrongKey(format!(
            "{what} is not private (CKA_PRIVATE is not true), so a session that is not logged \
             in may use it; {fix}"
        )));
    }
    let Some(id) = id else {
        return Err(HsmError::WrongKey(format!(
            "{what} has no CKA_ID; an account's key object must have one so that it is found \
             again exactly; {fix}"
        )));
    };
    if extractable != Some(false) {
        return Err(HsmError::WrongKey(format!(
            "{what} is extractable (CKA_EXTRACTABLE is not false), so whoever holds the PIN \
             could wrap its value out of the token; {fix}"
        )));
    }
    if wrap != Some(false) {
        return Err(HsmError::WrongKey(format!(
            "{what} may wrap other keys (CKA_WRAP is not false), so whoever holds the PIN could \
             wrap any extractable key under it and decrypt that key's value with it; {fix}"
        )));
    }
    if derive != Some(false) {
        return Err(HsmError::WrongKey(format!(
            "{what} may derive keys (CKA_DERIVE is not false), and a key derived from it may be \
             made readable; {fix}"
        )));
    }
    Ok(id)
}

/// Whether `session` is logged in as the user: a session that is not sees no private object,
/// so an empty search on it says nothing about what the token holds.
pub(crate) fn logged_in(session: &Session) -> bool {
    use cryptoki::session::SessionState;
    session.get_session_info().is_ok_and(|info| {
        matches!(
            info.session_state(),
            SessionState::RoUser | SessionState::RwUser
        )
    })
}

/// The KEK's id: see [`CHECK_NONCE`].
pub(crate) fn key_id(session: &Session, key: ObjectHandle) -> Result<KekId, CkError> {
    let mut nonce = CHECK_NONCE;
    let params = GcmParams::new(&mut nonce, CHECK_AAD, TAG_BITS.into())?;
    let tag = session.encrypt(&Mechanism::AesGcm(params), key, &[])?;
    let prefix = tag.get(..KEK_ID_LEN).ok_or(CkError::InvalidValue)?;
    Ok(KekId(format!("{KEK_ID_PREFIX}{}", hex::encode(prefix))))
}

/// AES-GCM encryption inside the token: `ciphertext || tag`.
pub(crate) fn encrypt(
    session: &Session,
    key: ObjectHandle,
    nonce: &mut [u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CkError> {
    let params = GcmParams::new(nonce, aad, TAG_BITS.into())?;
    session.encrypt(&Mechanism::AesGcm(params), key, plaintext)
}

/// AES-GCM decryption inside the token. The plaintext comes back in a buffer the caller must
/// wipe.
pub(crate) fn decrypt(
    session: &Session,
    key: ObjectHandle,
    nonce: &mut [u8; NONCE_LEN],
    aad: &[u8],
    ciphertext_and_tag: &[u8],
) -> Result<Vec<u8>, CkError> {
    let params = GcmParams::new(nonce, aad, TAG_BITS.into())?;
    session.decrypt(&Mechanism::AesGcm(params), key, ciphertext_and_tag)
}
