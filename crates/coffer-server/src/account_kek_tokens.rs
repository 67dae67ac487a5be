//! Account KEKs in the instance KEK's PKCS#11 token (`--kek pkcs11`, `--kek pkcs11:…`).
//!
//! A process loads a PKCS#11 module once, so an account's key object must be in the token the
//! instance KEK is in: it joins the instance's session pool (coffer-hsm, `account.rs`) and is
//! used through it like a KEK version, with the same wrap format. A data dir whose instance KEK
//! is a key file therefore refuses PKCS#11 account keys (400, naming why).
//!
//! `--kek pkcs11` generates the key in the token: AES-256, CKA_SENSITIVE, never extractable,
//! CKA_TOKEN, labelled `<instance KEK label>.account.<account id>` with a random 16-byte
//! CKA_ID. `--kek pkcs11:token=…;object=…[;id=…]` takes an existing AES-256 key object of the
//! same token (module-path may be left out: the instance's is meant). The record names the
//! object by URI (label and CKA_ID, never a PIN) and says whether Coffer made it: only an
//! object Coffer made, under the label it gives, is destroyed (C_DestroyObject) when the
//! account is deleted; one the operator named is left in place, and logged.

use std::sync::Arc;

use coffer_core::{CoreError, InvalidKind};
use coffer_crypto::{KekId, KekProvider};
use coffer_hsm::{HsmError, KeyObject, Pkcs11Kek, Pkcs11Uri};
use coffer_types::AccountId;

use crate::kek_versions::KekRing;

pub(crate) const PROVIDER_PKCS11: &str = "pkcs11";

/// The label `--kek pkcs11` gives the account's key object.
pub(crate) fn label(base: &Pkcs11Uri, account: AccountId) -> String {
    format!("{}.account.{account}", base.object)
}

/// The URI recorded for an account's key object: the instance KEK's module and token, the
/// object's label and CKA_ID, and no pin-source (the token is logged in with the instance's
/// PIN).
fn object_uri(base: &Pkcs11Uri, object: &KeyObject) -> Pkcs11Uri {
    let mut uri = base.clone();
    uri.object = object.label.clone();
    uri.id = object.cka_id.clone();
    uri.pin_source = None;
    uri
}

fn invalid(message: String) -> CoreError {
    CoreError::invalid(InvalidKind::Field, "/kek", message)
}

/// The instance KEK's token, or why an account key cannot be in a token here.
fn token(instance: &KekRing) -> Result<(&Arc<Pkcs11Kek>, &Pkcs11Uri), CoreError> {
    instance.pkcs11().ok_or_else(|| {
        invalid(
            "this instance's KEK is a key file, so it has no PKCS#11 token for an account key: \
             an account key in a token must share the instance KEK's token (a process loads one \
             PKCS#11 module); use `file` or `file:/path`"
                .to_owned(),
        )
    })
}

/// What a token refused, as the operator's request error: the URI or the object named is not
/// usable (400), the token is write-protected (409), or the token is unavailable (503).
fn refused(e: HsmError) -> CoreError {
    match e {
        HsmError::Uri(_)
        | HsmError::Module(_)
        | HsmError::TokenNotFound(_)
        | HsmError::KeyNotFound(_)
        | HsmError::WrongKey(_) => invalid(e.to_string()),
        HsmError::ReadOnly(_) => CoreError::KekRotationUnsupported(
            "the PKCS#11 token holding the instance KEK is write-protected, so no account key \
             can be generated in it",
        ),
        other => CoreError::Unavailable(other.to_string()),
    }
}

/// A made or taken key object: its record's URI, and the provider that uses it.
pub(crate) struct Made {
    pub(crate) uri: String,
    pub(crate) object: KeyObject,
    pub(crate) kek: Arc<dyn KekProvider>,
}

fn made(kek: &Arc<Pkcs11Kek>, base: &Pkcs11Uri, object: KeyObject) -> Result<Made, CoreError> {
    let provider = kek
        .version(&object.kek_id)
        .ok_or_else(|| CoreError::Internal("the account's key object is not in use".into()))?;
    Ok(Made {
        uri: object_uri(base, &object).to_string(),
        object,
        kek: Arc::new(provider),
    })
}

/// `--kek pkcs11`: generates the account's key object in the instance KEK's token.
pub(crate) fn generate(instance: &KekRing, account: AccountId) -> Result<Made, CoreError> {
    let (kek, base) = token(instance)?;
    let cka_id: [u8; 16] = coffer_crypto::random_array();
    let object = kek
        .generate_account_key(&label(base, account), &cka_id)
        .map_err(refused)?;
    made(kek, base, object)
}

/// `--kek pkcs11:…`: takes the existing key object the URI names, in the instance KEK's token.
/// `recorded`: the label of the object this account's record names now, if any.
pub(crate) fn take(
    instance: &KekRing,
    text: &str,
    recorded: Option<&str>,
) -> Result<Made, CoreError> {
    let (kek, base) = token(instance)?;
    let uri = parse(text, base)?;
    check_label(base, &uri.object, recorded)?;
    let object = kek.open_account_key(&uri).map_err(refused)?;
    made(kek, base, object)
}

/// Parses an operator's URI; without `module-path` it means the instance KEK's module.
fn parse(text: &str, base: &Pkcs11Uri) -> Result<Pkcs11Uri, CoreError> {
    Pkcs11Uri::parse_with_default_module(text, &base.module_path)
        .map_err(|e| invalid(e.to_string()))
}

/// Refuses an operator's object under a label Coffer gives its own objects in the instance
/// KEK's token (`<label>`: the instance KEK's first version; `<label>.v<n>`: its later
/// versions; `<label>.account.<32 hex digits>`: accounts' generated keys), unless it is the
/// object already recorded for this account (`recorded`): Coffer destroys objects under those
/// labels when it retires a version or deletes an account, so another account's key would go
/// with them. Other labels that merely start alike (`<label>.vault`) are the operator's.
fn check_label(base: &Pkcs11Uri, object: &str, recorded: Option<&str>) -> Result<(), CoreError> {
    if recorded == Some(object) {
        return Ok(());
    }
    let Some(rest) = object.strip_prefix(base.object.as_str()) else {
        return Ok(());
    };
    let digits = |s: &str, hex: bool| {
        !s.is_empty()
            && s.bytes().all(|b| {
                if hex {
                    b.is_ascii_hexdigit()
                } else {
                    b.is_ascii_digit()
                }
            })
    };
    let whose = if rest.is_empty() {
        "the instance KEK's first version"
    } else if rest.strip_prefix(".v").is_some_and(|n| digits(n, false)) {
        "a version of the instance KEK"
    } else if rest
        .strip_prefix(".account.")
        .is_some_and(|id| id.len() == 32 && digits(id, true))
    {
        "an account's generated key"
    } else {
        return Ok(());
    };
    Err(invalid(format!(
        "the object label {object:?} is the label Coffer gives {whose} in this token; name an \
         object under a label of its own"
    )))
}

/// Stops using a key object taken or made for a request that then failed; destroys it if
/// this request made it (nothing was wrapped by it: it was never recorded).
pub(crate) fn undo(instance: &KekRing, object: &KeyObject, made_here: bool) {
    let Some((kek, _)) = instance.pkcs11() else {
        return;
    };
    if made_here {
        if let Err(e) = kek.destroy_account_key(object) {
            tracing::warn!(object = %object.describe(), error = %e, "could not destroy an unrecorded account key object");
        }
    } else {
        kek.forget_account_key(&object.kek_id);
    }
}

/// The recorded object: label and CKA_ID from the URI, and the id it must have.
pub(crate) fn recorded(uri: &str, kek_id: &str) -> Result<KeyObject, String> {
    let uri = Pkcs11Uri::parse(uri).map_err(|e| e.to_string())?;
    Ok(KeyObject {
        label: uri.object,
        cka_id: uri.id,
        kek_id: KekId(kek_id.to_owned()),
    })
}

/// Opens a recorded account key object in the instance KEK's token. `Err`: why the account
/// is unavailable (its object is gone or another key, the token is unavailable, or the
/// instance KEK is not in a token).
pub(crate) fn open(
    instance: &KekRing,
    uri: &str,
    kek_id: &str,
) -> Result<Arc<dyn KekProvider>, String> {
    let Some((kek, _)) = instance.pkcs11() else {
        return Err(
            "the account's key is in a PKCS#11 token, but this instance's KEK is a key file, so \
             no PKCS#11 module is loaded"
                .to_owned(),
        );
    };
    let object = recorded(uri, kek_id)?;
    kek.load_account_key(&object).map_err(|e| e.to_string())?;
    let version = kek
        .version(&object.kek_id)
        .ok_or_else(|| "the account's key object is not in use".to_owned())?;
    Ok(Arc::new(version))
}

/// Destroys the account's key object if Coffer made it (and it is under the label Coffer gives
/// it); otherwise stops using it and leaves it in the token, logged.
pub(crate) fn destroy(
    instance: &KekRing,
    account: AccountId,
    uri: &str,
    kek_id: &str,
    made_by_coffer: bool,
) -> Result<(), CoreError> {
    let object = recorded(uri, kek_id).map_err(CoreError::Unavailable)?;
    let Some((kek, base)) = instance.pkcs11() else {
        return Err(CoreError::Unavailable(format!(
            "cannot destroy the key object {}: this instance's KEK is not in a PKCS#11 token",
            object.describe()
        )));
    };
    if !made_by_coffer || object.label != label(base, account) {
        kek.forget_account_key(&object.kek_id);
        tracing::warn!(
            account = %account,
            object = %object.describe(),
            kek = %object.kek_id,
            "the deleted account's KEK is a key object the operator named; it is left in the token: destroy it to finish shredding the account"
        );
        return Ok(());
    }
    match kek.destroy_account_key(&object) {
        Ok(true) => {
            tracing::info!(account = %account, object = %object.describe(), "destroyed the deleted account's key object in the token");
            Ok(())
        }
        Ok(false) => {
            tracing::warn!(account = %account, object = %object.describe(), "the deleted account's key object was not in the token");
            Ok(())
        }
        Err(e) => Err(CoreError::Unavailable(format!(
            "cannot destroy the key object {}: {e}",
            object.describe()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Pkcs11Uri {
        Pkcs11Uri::parse(
            "pkcs11:token=coffer;object=coffer-kek?module-path=/usr/lib/my%20hsm/p11.so&pin-source=file:/etc/pin",
        )
        .unwrap()
    }

    #[test]
    fn an_operator_uri_without_a_module_means_the_instances() {
        let uri = parse("pkcs11:token=coffer;object=team-b", &base()).unwrap();
        assert_eq!(uri.module_path, base().module_path);
        assert_eq!(uri.object, "team-b");
        assert_eq!(uri.pin_source, None);
        let uri = parse(
            "pkcs11:token=coffer;object=b?module-path=/other.so",
            &base(),
        )
        .unwrap();
        assert_eq!(uri.module_path, std::path::PathBuf::from("/other.so"));
        let e = parse("pkcs11:object=b", &base()).unwrap_err();
        assert!(e.to_string().contains("names no token"), "{e}");
        // `module-path=` as text in a value names no module: the instance's is still meant.
        let uri = parse("pkcs11:token=coffer;object=module-path=x", &base()).unwrap();
        assert_eq!(uri.module_path, base().module_path);
        let uri = parse("pkcs11:token=coffer;object=b?pin-source=file:/p", &base()).unwrap();
        assert_eq!(uri.module_path, base().module_path);
    }

    #[test]
    fn labels_coffer_gives_its_own_objects_are_not_taken() {
        let account = AccountId::from_bytes([7; 16]);
        let own = label(&base(), account);
        let other = format!("coffer-kek.account.{}", "0a".repeat(16));
        for object in [
            "coffer-kek",
            "coffer-kek.v2",
            "coffer-kek.v17",
            &other,
            &own,
        ] {
            let e = check_label(&base(), object, None).unwrap_err();
            assert!(
                e.to_string().contains("label Coffer gives"),
                "{object}: {e}"
            );
        }
        check_label(&base(), &own, Some(&own)).unwrap();
        for object in [
            "team-b",
            "coffer-kekv2",
            "other.v2",
            "coffer-kek.vault",
            "coffer-kek.v",
            "coffer-kek.v2x",
            "coffer-kek.account.x",
            "coffer-kek.account.",
            &format!("coffer-kek.account.{}", "0g".repeat(16)),
            &format!("coffer-kek.account.{}", "0a".repeat(17)),
        ] {
            check_label(&base(), object, None).unwrap();
        }
    }

    #[test]
    fn the_recorded_uri_names_label_and_id_and_no_pin_source() {
        let account = AccountId::from_bytes([7; 16]);
        let object = KeyObject {
            label: label(&base(), account),
            cka_id: Some(vec![0xab, 0x01]),
            kek_id: KekId("pkcs11:0011223344556677".into()),
        };
        assert_eq!(object.label, format!("coffer-kek.account.{account}"));
        let shown = object_uri(&base(), &object).to_string();
        assert!(
            shown.starts_with(&format!(
                "pkcs11:token=coffer;object=coffer-kek.account.{account};id=%AB%01?"
            )),
            "{shown}"
        );
        assert!(!shown.contains("pin-source"), "{shown}");
        assert_eq!(recorded(&shown, "pkcs11:0011223344556677").unwrap(), object);
    }
}
