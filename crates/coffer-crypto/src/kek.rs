//! Key-encryption-key providers.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use aws_lc_rs::hkdf;
use zeroize::Zeroizing;

use crate::envelope::{unwrap_key, wrap_key};
use crate::{CryptoError, DataKey, DekContext, WrappedDataKey, random};

/// Names one KEK (one version of it, once rotation exists). Recorded beside every wrapped key so
/// that unwrap picks the right KEK and rotation can find what still needs rewrapping. Not secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KekId(pub String);

impl fmt::Display for KekId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A source of the key-encryption key. The KEK itself never leaves the provider: callers hand
/// it DEKs to wrap and wrapped DEKs to unwrap. Implementations: [`FileKek`] (a key file in the
/// data dir) and, later, a PKCS#11 HSM provider. Rotation adds KEK versions: `wrap` always uses
/// the current one, `unwrap` uses the one named in the wrapped key.
pub trait KekProvider: Send + Sync + std::fmt::Debug {
    /// The KEK that `wrap` uses now.
    fn current_kek_id(&self) -> KekId;
    fn wrap(&self, key: &DataKey, ctx: &DekContext<'_>) -> Result<WrappedDataKey, CryptoError>;
    fn unwrap(
        &self,
        wrapped: &WrappedDataKey,
        ctx: &DekContext<'_>,
    ) -> Result<DataKey, CryptoError>;
}

const KEK_LEN: usize = 32;
const KEK_ID_PREFIX: &str = "file:";

// The KEK file's bytes key no primitive directly. They are only the input keying material of
// HKDF-SHA256, which derives one subkey per job, so that no key is ever used with two
// algorithms: AES-256-GCM wraps under one subkey, and the public KEK id is another.

/// HKDF salt: names the scheme and its version. A new derivation gets a new salt, so it cannot
/// produce the subkeys of this one.
const KEK_SALT: &[u8] = b"coffer/kek/v1";
/// HKDF info of the KEK id (8 bytes, shown as 16 hex digits after [`KEK_ID_PREFIX`]). 64 bits
/// are plenty to tell a handful of KEK versions apart, and being a PRF output it reveals
/// nothing usable about the KEK or the wrapping subkey.
const KEK_ID_INFO: &[u8] = b"kek id";
const KEK_ID_LEN: usize = 8;
/// HKDF info of the AES-256-GCM key that wraps DEKs.
const KEK_WRAP_INFO: &[u8] = b"kek wrap";
const WRAP_KEY_LEN: usize = 32;

/// A 256-bit KEK kept in a file (mode 0600) in the data dir.
///
/// Rotation fits the [`KekProvider`] trait as it is: a rotating file provider would hold several
/// `(KekId, LessSafeKey)` versions (one file each), wrap with the newest and, in `unwrap`, pick
/// the version whose id the wrapped key names, failing with `KeyUnavailable` for an id it does
/// not hold. Because every [`WrappedDataKey`] already carries its `kek_id`, rewrapping after
/// rotation is a scan for keys whose id is not the current one.
pub struct FileKek {
    path: PathBuf,
    id: KekId,
    /// The prepared wrapping subkey. Neither the file's bytes nor the subkey's are kept: both
    /// are wiped once this is built.
    key: LessSafeKey,
}

impl FileKek {
    /// Creates a new random KEK at `path`; fails if the file exists.
    ///
    /// The file is created with `O_EXCL` and mode 0600, so an existing KEK is never overwritten
    /// (that would make every value sealed under it unreadable) and the key is never readable
    /// by others, even briefly. It returns only after the file and its directory entry are on
    /// disk. A crash half-way can leave a short file, which [`FileKek::open`] refuses by name;
    /// nothing can have been wrapped under it yet, so deleting it is safe.
    pub fn create(path: &Path) -> Result<FileKek, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; KEK_LEN]);
        random::fill(&mut bytes[..]);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| io_error(path, e))?;
        let written = file
            .write_all(&bytes[..])
            .and_then(|()| file.sync_all())
            .and_then(|()| sync_parent_dir(path));
        if let Err(e) = written {
            drop(file);
            // The key was never handed out, so removing it loses nothing and lets a retry
            // succeed instead of tripping over a partial file. A failed removal is left for
            // `open` to report as a short file.
            let _ = fs::remove_file(path);
            return Err(io_error(path, e));
        }
        Ok(FileKek::from_bytes(path, &bytes))
    }

    /// Opens an existing KEK file; refuses a file readable by group or others.
    pub fn open(path: &Path) -> Result<FileKek, CryptoError> {
        let bytes = read_key_file(path, "KEK file")?;
        Ok(FileKek::from_bytes(path, &bytes))
    }

    fn from_bytes(path: &Path, bytes: &Zeroizing<[u8; KEK_LEN]>) -> FileKek {
        // aws-lc keeps its own copy of `bytes` inside the PRK and wipes it when the PRK drops.
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, KEK_SALT).extract(&bytes[..]);
        let mut id = [0u8; KEK_ID_LEN];
        derive(&prk, KEK_ID_INFO, &mut id);
        let id = KekId(format!("{KEK_ID_PREFIX}{}", hex::encode(id)));
        // Filled here rather than through aws-lc's `From<Okm> for UnboundKey`, which leaves an
        // unwiped copy of the subkey on its stack.
        let mut wrap = Zeroizing::new([0u8; WRAP_KEY_LEN]);
        derive(&prk, KEK_WRAP_INFO, &mut wrap[..]);
        // Invariant: `UnboundKey::new` fails only for a key of the wrong length, and this one is
        // exactly AES-256's 32 bytes.
        let unbound = UnboundKey::new(&AES_256_GCM, &wrap[..])
            .expect("a 32-byte key is always a valid AES-256-GCM key");
        FileKek {
            path: path.to_owned(),
            id,
            key: LessSafeKey::new(unbound),
        }
    }
}

/// An HKDF output length given at run time (aws-lc-rs only has lengths tied to an algorithm).
struct OutputLen(usize);

impl hkdf::KeyType for OutputLen {
    fn len(&self) -> usize {
        self.0
    }
}

/// Fills `out` with HKDF-Expand(`prk`, `info`, `out.len()`).
fn derive(prk: &hkdf::Prk, info: &[u8], out: &mut [u8]) {
    // Invariant: expanding fails only for an output over 255 * 32 bytes or one whose length
    // differs from the requested length; the callers ask for 8 or 32 bytes and pass a buffer of
    // exactly that length. (aws-lc also fails on allocation failure, fatal anyway.)
    prk.expand(&[info], OutputLen(out.len()))
        .and_then(|okm| okm.fill(out))
        .expect("HKDF-SHA256 expands to 8 or 32 bytes");
}

impl fmt::Debug for FileKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileKek")
            .field("path", &self.path)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl KekProvider for FileKek {
    fn current_kek_id(&self) -> KekId {
        self.id.clone()
    }

    fn wrap(&self, key: &DataKey, ctx: &DekContext<'_>) -> Result<WrappedDataKey, CryptoError> {
        Ok(WrappedDataKey {
            kek_id: self.id.clone(),
            bytes: wrap_key(&self.key, key, ctx)?,
        })
    }

    fn unwrap(
        &self,
        wrapped: &WrappedDataKey,
        ctx: &DekContext<'_>,
    ) -> Result<DataKey, CryptoError> {
        if wrapped.kek_id != self.id {
            // Not opaque: the id is public, and an operator who started with the wrong key file
            // needs to be told which KEK the data expects.
            return Err(CryptoError::KeyUnavailable(format!(
                "key was wrapped by KEK {}, but only KEK {} (from {}) is loaded",
                wrapped.kek_id,
                self.id,
                self.path.display()
            )));
        }
        unwrap_key(&self.key, &wrapped.bytes, ctx)
    }
}

/// Reads a 32-byte key file, refusing anything but a regular file of exactly 32 bytes that
/// only its owner may access; `what` names the file in errors ("KEK file", "node key file").
pub(crate) fn read_key_file(
    path: &Path,
    what: &str,
) -> Result<Zeroizing<[u8; KEK_LEN]>, CryptoError> {
    let shown = path.display();
    let mut file = File::open(path).map_err(|e| io_error(path, e))?;
    // Checks the metadata of the handle that is then read, so the file cannot be swapped
    // between the check and the read.
    let meta = file.metadata().map_err(|e| io_error(path, e))?;
    if !meta.is_file() {
        return Err(CryptoError::KeyUnavailable(format!(
            "{what} {shown} is not a regular file"
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CryptoError::KeyUnavailable(format!(
            "{what} {shown} has mode {mode:03o}, which lets group or others access it; \
             restrict it with `chmod 600 {shown}`"
        )));
    }
    let wrong_size = |found: &dyn fmt::Display| {
        CryptoError::KeyUnavailable(format!(
            "{what} {shown} must hold exactly {KEK_LEN} bytes, but holds {found}"
        ))
    };
    if meta.len() != KEK_LEN as u64 {
        return Err(wrong_size(&meta.len()));
    }
    let mut bytes = Zeroizing::new([0u8; KEK_LEN]);
    file.read_exact(&mut bytes[..])
        .map_err(|_| wrong_size(&"fewer"))?;
    // The size was checked before reading; a file that grew since is refused too rather
    // than silently using its first 32 bytes.
    let mut probe = [0u8; 1];
    if file.read(&mut probe).map_err(|e| io_error(path, e))? != 0 {
        return Err(wrong_size(&"more"));
    }
    Ok(bytes)
}

pub(crate) fn io_error(path: &Path, source: io::Error) -> CryptoError {
    CryptoError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Makes the new directory entry durable: without this, a crash after `create` returned could
/// lose the file while values wrapped under the key survive.
fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

#[cfg(test)]
mod tests {
    use coffer_types::{AccountId, DekId};

    use super::*;

    fn ctx() -> DekContext<'static> {
        DekContext {
            account: Some(AccountId::from_bytes([1; 16])),
            dek: DekId::from_bytes([2; 16]),
            purpose: "dek",
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) {
        fs::write(path, bytes).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn create_makes_a_private_32_byte_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        FileKek::create(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(fs::read(&path).unwrap().len(), 32);
    }

    #[test]
    fn create_refuses_an_existing_file_and_leaves_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let first = FileKek::create(&path).unwrap();
        let before = fs::read(&path).unwrap();
        match FileKek::create(&path) {
            Err(CryptoError::Io { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::AlreadyExists)
            }
            other => panic!("expected AlreadyExists, got {other:?}"),
        }
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(
            FileKek::open(&path).unwrap().current_kek_id(),
            first.current_kek_id()
        );
    }

    #[test]
    fn open_refuses_group_or_world_access() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        for bad_mode in [0o644, 0o640, 0o604, 0o660, 0o610] {
            write_with_mode(&path, &[9; 32], bad_mode);
            let err = FileKek::open(&path).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, CryptoError::KeyUnavailable(_)), "{msg}");
            assert!(msg.contains("chmod 600"), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("{bad_mode:03o}")), "{msg}");
        }
        write_with_mode(&path, &[9; 32], 0o400);
        assert!(FileKek::open(&path).is_ok());
    }

    #[test]
    fn open_refuses_wrong_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        for len in [0, 1, 31, 33, 64] {
            write_with_mode(&path, &vec![9; len], 0o600);
            let err = FileKek::open(&path).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, CryptoError::KeyUnavailable(_)), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains("32 bytes"), "{msg}");
        }
    }

    #[test]
    fn open_refuses_a_missing_file_or_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent");
        match FileKek::open(&missing) {
            Err(CryptoError::Io { source, path }) => {
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
                assert_eq!(path, missing.display().to_string());
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(
            FileKek::open(&sub),
            Err(CryptoError::KeyUnavailable(_))
        ));
    }

    #[test]
    fn wrap_survives_a_reopen_and_the_id_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let dek = DataKey::generate();
        let (wrapped, id) = {
            let kek = FileKek::create(&path).unwrap();
            (kek.wrap(&dek, &ctx()).unwrap(), kek.current_kek_id())
        };
        assert_eq!(wrapped.kek_id, id);
        let reopened = FileKek::open(&path).unwrap();
        assert_eq!(reopened.current_kek_id(), id);
        let unwrapped = reopened.unwrap(&wrapped, &ctx()).unwrap();
        assert_eq!(unwrapped.expose_secret(), dek.expose_secret());
        // Context binding holds through the provider too.
        let other = DekContext {
            purpose: "token-mac",
            ..ctx()
        };
        assert!(matches!(
            reopened.unwrap(&wrapped, &other),
            Err(CryptoError::Opaque)
        ));
    }

    // Known answers computed independently of this crate with Python's `cryptography` package
    // (48.0.0); `sub` is HKDF-SHA256 exactly as docs/envelope-format.md specifies it:
    //
    //   from cryptography.hazmat.primitives.hashes import SHA256
    //   from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    //   def sub(kek, info, n):
    //       return HKDF(SHA256(), n, b"coffer/kek/v1", info).derive(kek)
    //
    // The HKDF outputs were cross-checked against RFC 5869 written out with `hmac`/`hashlib`:
    //   prk = hmac.new(b"coffer/kek/v1", kek, hashlib.sha256).digest()
    //   sub(kek, info, n) == hmac.new(prk, info + b"\x01", hashlib.sha256).digest()[:n]

    /// `"file:" + sub(b"\x42" * 32, b"kek id", 8).hex()`
    const KAT_ID_42: &str = "file:83167eb1597a88c2";
    /// `"file:" + sub(bytes(range(32)), b"kek id", 8).hex()`
    const KAT_ID_RANGE: &str = "file:d83b25a920e56c0a";

    fn kek_file(dir: &Path, name: &str, bytes: &[u8; KEK_LEN]) -> FileKek {
        let path = dir.join(name);
        write_with_mode(&path, bytes, 0o600);
        FileKek::open(&path).unwrap()
    }

    #[test]
    fn kek_id_is_a_keyed_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let id = kek_file(dir.path(), "42", &[0x42; 32]).current_kek_id();
        assert_eq!(id, KekId(KAT_ID_42.to_owned()));
        assert!(!id.0.contains("4242"));
        let range: [u8; 32] = std::array::from_fn(|i| i as u8);
        let id = kek_file(dir.path(), "range", &range).current_kek_id();
        assert_eq!(id, KekId(KAT_ID_RANGE.to_owned()));
        assert!(!id.0.contains("000102"));

        let a = FileKek::create(&dir.path().join("a"))
            .unwrap()
            .current_kek_id();
        let b = FileKek::create(&dir.path().join("b"))
            .unwrap()
            .current_kek_id();
        assert_ne!(a, b);
        for id in [a, b] {
            assert_eq!(id.0.len(), "file:".len() + 16);
            assert!(id.0.starts_with("file:"));
            assert!(
                id.0[5..]
                    .bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
    }

    /// The DEK `bytes(range(32, 64))` wrapped by the KEK file `b"\x42" * 32` for `ctx()`:
    ///
    ///   from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    ///   nonce = bytes(range(0xb0, 0xbc)); dek = bytes(range(32, 64))
    ///   aad = (bytes([13]) + b"coffer/dek/v1" + bytes([3]) + b"dek" + b"\x01" + b"\x01" * 16
    ///          + b"\x02" * 16)
    ///   wrap_key = sub(b"\x42" * 32, b"kek wrap", 32)
    ///   (b"\x01" + nonce + AESGCM(wrap_key).encrypt(nonce, dek, aad)).hex()
    const KAT_FILE_WRAPPED: &str = concat!(
        "01b0b1b2b3b4b5b6b7b8b9babb4936ed37e28b88e54ef9c6d2674a19a4d96062",
        "b0f6e439b034ebe862df66bd79525adb44395951a00a7c573c00b52236",
    );

    #[test]
    fn wraps_under_a_derived_subkey_not_the_raw_kek() {
        let dir = tempfile::tempdir().unwrap();
        let kek = kek_file(dir.path(), "kek", &[0x42; 32]);
        let dek = DataKey::from_bytes(&mut std::array::from_fn(|i| 32 + i as u8));
        let nonce = std::array::from_fn(|i| 0xb0 + i as u8);
        let wrapped = crate::envelope::wrap_key_with_nonce(&kek.key, &dek, &ctx(), nonce).unwrap();
        assert_eq!(hex::encode(&wrapped), KAT_FILE_WRAPPED);

        // The vector opens through the public provider API, so unwrap derives the same subkey.
        let from_vector = WrappedDataKey {
            kek_id: KekId(KAT_ID_42.to_owned()),
            bytes: hex::decode(KAT_FILE_WRAPPED).unwrap(),
        };
        let unwrapped = kek.unwrap(&from_vector, &ctx()).unwrap();
        assert_eq!(unwrapped.expose_secret(), dek.expose_secret());

        // And the file's raw bytes, used as an AES key, open nothing.
        let raw = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[0x42; 32]).unwrap());
        assert!(matches!(
            unwrap_key(&raw, &from_vector.bytes, &ctx()),
            Err(CryptoError::Opaque)
        ));
        let fresh = kek.wrap(&dek, &ctx()).unwrap();
        assert!(matches!(
            unwrap_key(&raw, &fresh.bytes, &ctx()),
            Err(CryptoError::Opaque)
        ));
    }

    #[test]
    fn unwrap_with_another_keks_id_is_key_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileKek::create(&dir.path().join("a")).unwrap();
        let b = FileKek::create(&dir.path().join("b")).unwrap();
        let dek = DataKey::generate();
        let wrapped = a.wrap(&dek, &ctx()).unwrap();
        match b.unwrap(&wrapped, &ctx()) {
            Err(CryptoError::KeyUnavailable(msg)) => {
                assert!(msg.contains(&a.current_kek_id().0), "{msg}");
                assert!(msg.contains(&b.current_kek_id().0), "{msg}");
            }
            other => panic!("expected KeyUnavailable, got {other:?}"),
        }
        // Relabelling the bytes with b's id does not help: the wrong key still cannot open them.
        let relabelled = WrappedDataKey {
            kek_id: b.current_kek_id(),
            ..wrapped
        };
        assert!(matches!(
            b.unwrap(&relabelled, &ctx()),
            Err(CryptoError::Opaque)
        ));
    }

    #[test]
    fn debug_shows_no_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let kek = FileKek::create(&path).unwrap();
        let key_hex = hex::encode(fs::read(&path).unwrap());
        let shown = format!("{kek:?}");
        assert!(shown.contains(&kek.current_kek_id().0), "{shown}");
        assert!(!shown.contains(&key_hex[..8]), "{shown}");
    }
}
