//! The token's user PIN: from the environment (`COFFER_PKCS11_PIN`, read by the binary and
//! handed in) or from a file named by the URI's `pin-source`. Never from a command-line
//! argument, never written anywhere by Coffer.

use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::{HsmError, Pkcs11Uri};

/// The environment variable the binaries read the PIN from.
pub const PIN_ENV: &str = "COFFER_PKCS11_PIN";

/// PIN files larger than this are refused: a PIN is short, and a large file is a mistake.
const MAX_PIN_FILE: u64 = 4096;

/// A token user PIN. Kept (wiped on drop) for as long as the provider lives, because a token
/// that went away needs a new login when it comes back.
pub struct Pin {
    value: Zeroizing<String>,
    /// Where it came from, for messages that say which setting to check.
    source: PinSource,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PinSource {
    Env,
    File(PathBuf),
}

impl fmt::Display for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::Env => write!(f, "{PIN_ENV}"),
            PinSource::File(path) => write!(f, "the PIN file {} (pin-source)", path.display()),
        }
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pin")
            .field("value", &"[redacted]")
            .field("source", &self.source)
            .finish()
    }
}

impl Pin {
    /// The PIN for `uri`: its `pin-source` file if it names one, else `from_env` (the value of
    /// [`PIN_ENV`], which the caller read). A URI's `pin-source` wins because it is recorded
    /// configuration; a PIN also present in the environment is then ignored (and a warning
    /// logged).
    pub fn resolve(uri: &Pkcs11Uri, from_env: Option<Zeroizing<String>>) -> Result<Pin, HsmError> {
        if let Some(path) = &uri.pin_source {
            if from_env.is_some() {
                tracing::warn!(
                    pin_source = %path.display(),
                    "{PIN_ENV} is set but the KEK's URI names a pin-source; using the file"
                );
            }
            return read_pin_file(path);
        }
        match from_env {
            Some(value) if !value.is_empty() => Ok(Pin {
                value,
                source: PinSource::Env,
            }),
            Some(_) => Err(HsmError::Pin(format!(
                "{PIN_ENV} is empty; set it to the token's user PIN"
            ))),
            None => Err(HsmError::Pin(format!(
                "no PIN for the PKCS#11 token: set {PIN_ENV}, or add \
                 pin-source=file:/path/to/pin to the URI (a PIN is never taken from the \
                 command line)"
            ))),
        }
    }

    pub(crate) fn expose_secret(&self) -> &str {
        &self.value
    }

    pub(crate) fn source(&self) -> &PinSource {
        &self.source
    }

    #[cfg(test)]
    pub(crate) fn for_tests(value: &str) -> Pin {
        Pin {
            value: Zeroizing::new(value.to_owned()),
            source: PinSource::Env,
        }
    }
}

/// Reads a PIN file by the rules of every secret file ([`crate::read_secret_file`]): private
/// to its owner (like the KEK file), a regular file, at most [`MAX_PIN_FILE`] bytes, UTF-8, one
/// trailing newline dropped.
fn read_pin_file(path: &Path) -> Result<Pin, HsmError> {
    let value = crate::read_secret_file(path, MAX_PIN_FILE).map_err(|what| {
        HsmError::Pin(format!("PIN file {} (pin-source): {what}", path.display()))
    })?;
    Ok(Pin {
        value,
        source: PinSource::File(path.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn uri(pin_source: Option<&Path>) -> Pkcs11Uri {
        let mut text = "pkcs11:token=t;object=k?module-path=/m.so".to_owned();
        if let Some(p) = pin_source {
            text.push_str(&format!("&pin-source=file:{}", p.display()));
        }
        Pkcs11Uri::parse(&text).unwrap()
    }

    fn write(path: &Path, bytes: &[u8], mode: u32) {
        fs::write(path, bytes).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn from_the_environment() {
        let pin = Pin::resolve(&uri(None), Some(Zeroizing::new("1234".into()))).unwrap();
        assert_eq!(pin.expose_secret(), "1234");
        assert_eq!(pin.source(), &PinSource::Env);
        let msg = Pin::resolve(&uri(None), None).unwrap_err().to_string();
        assert!(msg.contains(PIN_ENV) && msg.contains("pin-source"), "{msg}");
        let msg = Pin::resolve(&uri(None), Some(Zeroizing::new(String::new())))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("is empty"), "{msg}");
    }

    #[test]
    fn from_a_file_which_wins_over_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        write(&path, b"9876\n", 0o600);
        let u = uri(Some(&path));
        let pin = Pin::resolve(&u, Some(Zeroizing::new("1234".into()))).unwrap();
        assert_eq!(pin.expose_secret(), "9876");
        assert_eq!(pin.source(), &PinSource::File(path.clone()));
        write(&path, b"pin with spaces\r\n", 0o400);
        assert_eq!(
            Pin::resolve(&u, None).unwrap().expose_secret(),
            "pin with spaces"
        );
        write(&path, b"no-newline", 0o600);
        assert_eq!(
            Pin::resolve(&u, None).unwrap().expose_secret(),
            "no-newline"
        );
    }

    #[test]
    fn bad_pin_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        let u = uri(Some(&path));
        let msg = Pin::resolve(&u, None).unwrap_err().to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        for (bytes, mode, expect) in [
            (&b"1234"[..], 0o644, "chmod 600"),
            (b"1234", 0o640, "chmod 600"),
            (b"\n", 0o600, "is empty"),
            (b"\xff\xfe", 0o600, "not UTF-8"),
            (&[b'1'; 5000], 0o600, "over 4096 bytes"),
        ] {
            write(&path, bytes, mode);
            let err = Pin::resolve(&u, None).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, HsmError::Pin(_)), "{msg}");
            assert!(msg.contains(expect), "{mode:o}: {msg}");
            assert!(msg.contains("pin-source"), "{msg}");
            assert!(!msg.contains("1234"), "{msg}");
        }
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        let msg = Pin::resolve(&u, None).unwrap_err().to_string();
        assert!(msg.contains("not a regular file"), "{msg}");
    }

    #[test]
    fn debug_hides_the_value() {
        let pin = Pin::for_tests("s3cret-pin");
        let shown = format!("{pin:?}");
        assert!(
            shown.contains("[redacted]") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
