//! The data dir's KEK: a key file (`kek.key`, the default) or a key in a PKCS#11 token, named
//! by `kek.toml` so that `coffer server --data-dir` finds it without repeating flags.
//!
//! ```toml
//! # written by `coffer init`; no PIN here
//! provider = "pkcs11"
//! uri = "pkcs11:token=coffer;object=coffer-kek?module-path=/usr/lib/softhsm/libsofthsm2.so"
//! kek_id = "pkcs11:83167eb1597a88c2"
//! ```
//!
//! `kek_id` is the KEK's fingerprint at init; a server that finds another key under the label
//! refuses to start. The PIN is never in the data dir: it comes from `COFFER_PKCS11_PIN` (the
//! binary reads it and hands it over as [`KekSecrets`]) or from the URI's `pin-source` file.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use coffer_core::KekState;
use coffer_crypto::{FileKek, KekId, KekProvider};
use coffer_hsm::{HsmError, KeyObject, KeyOrigin, Pin, Pkcs11Config, Pkcs11Kek, Pkcs11Uri};
use coffer_types::Timestamp;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub(crate) use crate::kek_versions::KEK_FILE;
use crate::kek_versions::{KekRing, Provider, VERSIONS_FILE, file_time, read_record};

pub(crate) const KEK_CONFIG: &str = "kek.toml";

/// Secrets that open a data dir's KEK and are never stored in it: the PKCS#11 user PIN, which
/// the binary reads from `COFFER_PKCS11_PIN`. Unused with a file KEK.
#[derive(Default)]
pub struct KekSecrets {
    pub pkcs11_pin: Option<Zeroizing<String>>,
}

impl fmt::Debug for KekSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KekSecrets")
            .field(
                "pkcs11_pin",
                &self.pkcs11_pin.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// Which KEK `coffer init` gives a new data dir.
#[derive(Debug, Clone, Default)]
pub enum KekChoice {
    /// A new random key file, `kek.key`.
    #[default]
    File,
    /// The key under the URI's label in a PKCS#11 token, generated there if absent.
    Pkcs11(Box<Pkcs11Uri>),
}

/// What KEK a data dir was given, for `coffer init` to tell the operator.
#[derive(Debug, Clone)]
pub struct KekSummary {
    pub id: KekId,
    /// One line: where the KEK lives.
    pub description: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KekConfig {
    provider: String,
    uri: String,
    kek_id: String,
}

const PROVIDER_PKCS11: &str = "pkcs11";

/// Why a data dir's KEK could not be opened or made.
#[derive(Debug)]
pub(crate) struct KekError {
    pub(crate) message: String,
    /// The PKCS#11 login failed (no PIN, a PIN the token refused or locked) or the token is not
    /// there: a setting must change before a start can succeed, and trying again may lock the
    /// PIN ([`crate::ServerError::HsmLogin`]).
    pub(crate) login: bool,
}

impl From<String> for KekError {
    fn from(message: String) -> KekError {
        KekError {
            message,
            login: false,
        }
    }
}

/// `error` of the PKCS#11 provider, after `context`.
fn hsm_error(context: &str, error: HsmError) -> KekError {
    let login = matches!(error, HsmError::Pin(_) | HsmError::TokenNotFound(_));
    KekError {
        message: format!("{context}: {error}"),
        login,
    }
}

/// The KEK of an initialised data dir, as `kek.toml` (or its absence) and `kek-versions.toml`
/// say.
pub(crate) async fn open(dir: &Path, secrets: KekSecrets) -> Result<Arc<KekRing>, KekError> {
    let config_path = dir.join(KEK_CONFIG);
    let key_path = dir.join(KEK_FILE);
    if !config_path.exists() {
        return Ok(Arc::new(KekRing::open_files(dir)?));
    }
    if key_path.exists() {
        return Err(format!(
            "holds both {KEK_CONFIG} and a key file ({KEK_FILE}); only one may name the KEK"
        )
        .into());
    }
    let (uri, expected) = read_config(&config_path)?;
    let shown = config_path.display().to_string();
    let created = file_time(&config_path);
    let record_path = dir.join(VERSIONS_FILE);
    let dir = dir.to_owned();
    blocking(move || {
        let pin = Pin::resolve(&uri, secrets.pkcs11_pin).map_err(|e| hsm_error("KEK", e))?;
        if !record_path.exists() {
            // Never rotated: version 1, the object the URI names.
            let kek = Pkcs11Kek::open(Pkcs11Config::new(uri.clone(), pin), Some(&expected))
                .map_err(|e| hsm_error(&format!("KEK (configured in {shown})"), e))?;
            tracing::info!(kek = %kek.current_kek_id(), "the KEK is in a PKCS#11 token");
            return Ok(Arc::new(KekRing::single_pkcs11(
                &dir,
                Arc::new(kek),
                uri,
                created,
            )));
        }
        let entries = read_record(&record_path, Provider::Pkcs11)?;
        let record_shown = record_path.display();
        if entries.first().is_none_or(|v| v.meta.kek_id != expected) {
            return Err(format!(
                "{record_shown} does not start with the KEK {shown} names ({expected})"
            )
            .into());
        }
        let live: Vec<KeyObject> = entries
            .iter()
            .filter(|e| e.meta.state != KekState::Retired)
            .map(|e| {
                e.object.clone().ok_or_else(|| {
                    format!(
                        "{record_shown}: version {} names no key object (uri)",
                        e.meta.version
                    )
                })
            })
            .collect::<Result<_, String>>()?;
        let kek = Pkcs11Kek::open_versions(Pkcs11Config::new(uri.clone(), pin), &live)
            .map_err(|e| hsm_error(&format!("KEK (versions recorded in {record_shown})"), e))?;
        tracing::info!(kek = %kek.current_kek_id(), versions = live.len(), "the KEK is in a PKCS#11 token");
        Ok(Arc::new(KekRing::open_pkcs11(
            &dir,
            Arc::new(kek),
            uri,
            entries,
        )?))
    })
    .await
}

/// Makes the KEK of a new data dir: a key file, or the token's key and `kek.toml`.
pub(crate) async fn create(
    dir: &Path,
    choice: KekChoice,
    secrets: KekSecrets,
) -> Result<(Arc<KekRing>, KekSummary), KekError> {
    match choice {
        KekChoice::File => {
            let kek = FileKek::create(&dir.join(KEK_FILE)).map_err(|e| e.to_string())?;
            let summary = KekSummary {
                id: kek.current_kek_id(),
                description: format!("key file {}", dir.join(KEK_FILE).display()),
            };
            let ring = KekRing::single(dir, Arc::new(kek), Timestamp::now());
            Ok((Arc::new(ring), summary))
        }
        KekChoice::Pkcs11(uri) => {
            let config_path = dir.join(KEK_CONFIG);
            let dir = dir.to_owned();
            blocking(move || {
                let pin =
                    Pin::resolve(&uri, secrets.pkcs11_pin).map_err(|e| hsm_error("--kek", e))?;
                let (kek, origin) = Pkcs11Kek::open_or_generate(Pkcs11Config::new(*uri, pin))
                    .map_err(|e| hsm_error("--kek", e))?;
                write_config(&config_path, kek.uri(), &kek.current_kek_id())?;
                let how = match origin {
                    KeyOrigin::Generated => "generated in",
                    KeyOrigin::Existing => "found in",
                };
                let summary = KekSummary {
                    id: kek.current_kek_id(),
                    description: format!(
                        "AES-256 key {:?} {how} PKCS#11 {} (recorded in {})",
                        kek.uri().object,
                        kek.uri().token_description(),
                        config_path.display()
                    ),
                };
                let base = kek.uri().clone();
                let ring = KekRing::single_pkcs11(&dir, Arc::new(kek), base, Timestamp::now());
                Ok((Arc::new(ring), summary))
            })
            .await
        }
    }
}

/// A blocking KEK call (loading a module, logging in) off the async workers.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, KekError> + Send + 'static,
) -> Result<T, KekError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| format!("the KEK could not be opened: {e}"))?
}

fn read_config(path: &Path) -> Result<(Pkcs11Uri, KekId), String> {
    let shown = path.display();
    let text = fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let config: KekConfig =
        toml::from_str(&text).map_err(|e| format!("{shown} is not valid: {}", e.message()))?;
    if config.provider != PROVIDER_PKCS11 {
        return Err(format!(
            "{shown}: unknown provider {:?} (only \"{PROVIDER_PKCS11}\")",
            config.provider
        ));
    }
    let uri = Pkcs11Uri::parse(&config.uri).map_err(|e| format!("{shown}: {e}"))?;
    Ok((uri, KekId(config.kek_id)))
}

/// Writes `kek.toml` once (never over an existing file), private, and durably: the data dir is
/// useless without it.
fn write_config(path: &Path, uri: &Pkcs11Uri, id: &KekId) -> Result<(), String> {
    let shown = path.display();
    let body = toml::to_string(&KekConfig {
        provider: PROVIDER_PKCS11.to_owned(),
        uri: uri.to_string(),
        kek_id: id.0.clone(),
    })
    .map_err(|e| format!("cannot encode {shown}: {e}"))?;
    let text = format!(
        "# The key-encryption key of this data dir, written by `coffer init`. No secret here:\n\
         # the token's user PIN comes from COFFER_PKCS11_PIN or the URI's pin-source file.\n\
         {body}"
    );
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {shown}: {e}"))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| crate::fsio::sync_parent(path))
        .map_err(|e| format!("cannot write {shown}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_round_trips_and_holds_no_pin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEK_CONFIG);
        let uri = Pkcs11Uri::parse(
            "pkcs11:token=My%20Token;object=coffer-kek?module-path=/usr/lib/softhsm/libsofthsm2.so",
        )
        .unwrap();
        let id = KekId("pkcs11:0011223344556677".into());
        write_config(&path, &uri, &id).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("provider = \"pkcs11\""), "{text}");
        assert!(!text.to_lowercase().contains("pin-value"), "{text}");
        assert_eq!(read_config(&path).unwrap(), (uri.clone(), id.clone()));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Never overwritten.
        assert!(
            write_config(&path, &uri, &id)
                .unwrap_err()
                .contains("cannot create")
        );
    }

    #[test]
    fn a_bad_config_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEK_CONFIG);
        for (text, expect) in [
            (
                "provider = \"pkcs11\"\nuri = \"pkcs11:token=t\"\nkek_id = \"x\"\n",
                "names no key object",
            ),
            (
                "provider = \"vault\"\nuri = \"x\"\nkek_id = \"x\"\n",
                "unknown provider",
            ),
            ("provider = \"pkcs11\"\n", "is not valid"),
            (
                "provider = \"pkcs11\"\nuri = \"u\"\nkek_id = \"x\"\npin = \"1\"\n",
                "is not valid",
            ),
        ] {
            fs::write(&path, text).unwrap();
            let msg = read_config(&path).unwrap_err();
            assert!(msg.contains(expect), "{text}: {msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
        }
    }

    #[tokio::test]
    async fn a_dir_naming_two_keks_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        FileKek::create(&dir.path().join(KEK_FILE)).unwrap();
        assert!(open(dir.path(), KekSecrets::default()).await.is_ok());
        fs::write(dir.path().join(KEK_CONFIG), "provider = \"pkcs11\"\n").unwrap();
        let err = open(dir.path(), KekSecrets::default()).await.err().unwrap();
        assert!(
            err.message.contains("both kek.toml and a key file") && !err.login,
            "{err:?}"
        );
    }

    #[test]
    fn secrets_debug_is_redacted() {
        let secrets = KekSecrets {
            pkcs11_pin: Some(Zeroizing::new("pin-1234".into())),
        };
        let shown = format!("{secrets:?}");
        assert!(
            !shown.contains("pin-1234") && shown.contains("[redacted]"),
            "{shown}"
        );
    }
}
