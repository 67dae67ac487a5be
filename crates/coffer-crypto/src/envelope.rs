//! The envelope format: values sealed under DEKs, DEKs wrapped under the KEK.
//!
//! Both sealed values and wrapped keys have the layout `format (1) || nonce (12) || ciphertext
//! || tag (16)`, AES-256-GCM with a fresh random nonce per seal. What a ciphertext belongs to is
//! not stored in it but supplied again by the caller at open time and fed in as AAD, so bytes
//! copied to another row, account, version or key fail to open. docs/envelope-format.md is the
//! byte-level specification; the known-answer tests below pin this code to it.

use aws_lc_rs::aead::{Aad, LessSafeKey, NONCE_LEN, Nonce};
use coffer_types::{AccountId, DekId, SecretId, StoreId, Version};
use zeroize::Zeroizing;

use crate::secret::DATA_KEY_LEN;
use crate::{CryptoError, DataKey, Plaintext, random};

/// The only format so far. A future format gets a new byte *and* new AAD labels, so that bytes
/// relabelled from one format to the other can never authenticate; that is why the format byte
/// itself need not be part of the AAD.
const FORMAT_V1: u8 = 0x01;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + NONCE_LEN;
/// Bytes a sealed value or wrapped key adds to its plaintext.
pub const ENVELOPE_OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// The exact length of a wrapped [`DataKey`].
const WRAPPED_KEY_LEN: usize = ENVELOPE_OVERHEAD + DATA_KEY_LEN;

/// Domain-separation labels. Each AAD starts with one (length-prefixed), so an AAD built for
/// one kind of object can never equal one built for another, whatever the later fields hold.
const VALUE_LABEL: &[u8] = b"coffer/value/v1";
const DEK_LABEL: &[u8] = b"coffer/dek/v1";
// Label lengths are written as one byte.
const _: () = assert!(VALUE_LABEL.len() <= 255 && DEK_LABEL.len() <= 255);

const ID_LEN: usize = 16;
const VALUE_AAD_LEN: usize = 1 + VALUE_LABEL.len() + 4 * ID_LEN + 4;

/// What a sealed value is bound to. Every field goes into the AAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueContext {
    pub account: AccountId,
    pub store: StoreId,
    pub secret: SecretId,
    pub version: Version,
    pub dek: DekId,
}

/// What a wrapped DEK is bound to. `account` is `None` for instance-level keys (for example the
/// token-hashing key); `purpose` separates key uses ("dek", "token-mac", ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DekContext<'a> {
    pub account: Option<AccountId>,
    pub dek: DekId,
    pub purpose: &'a str,
}

impl DekContext<'_> {
    /// The AAD a wrapped key is bound to (docs/envelope-format.md, "AAD of a wrapped key"), for
    /// KEK providers that wrap elsewhere (inside an HSM) and must feed the same context in.
    pub fn aad(&self) -> Result<Vec<u8>, CryptoError> {
        dek_aad(self)
    }
}

/// A sealed value as stored: format byte, nonce, ciphertext and tag. Not secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedValue(pub Vec<u8>);

/// A DEK (or other instance key) wrapped by a KEK, with the id of the KEK that wrapped it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedDataKey {
    pub kek_id: crate::KekId,
    pub bytes: Vec<u8>,
}

/// Seals `plaintext` under `key` for `ctx`, with a fresh random nonce.
///
/// Random 96-bit nonces keep the chance of a repeat negligible only while one key seals fewer
/// than about 2^32 values; callers must retire DEKs well before that.
pub fn seal(
    key: &DataKey,
    ctx: &ValueContext,
    plaintext: &Plaintext,
) -> Result<SealedValue, CryptoError> {
    seal_with_nonce(key, ctx, plaintext, random::random_array())
}

/// [`seal`] with a caller-chosen nonce, for known-answer tests. Crate-private on purpose: a
/// nonce used twice under one key reveals the XOR of the plaintexts and lets an attacker forge
/// tags, so no caller outside this crate should ever pick one.
pub(crate) fn seal_with_nonce(
    key: &DataKey,
    ctx: &ValueContext,
    plaintext: &Plaintext,
    nonce: [u8; NONCE_LEN],
) -> Result<SealedValue, CryptoError> {
    seal_bytes(
        key.aead(),
        nonce,
        &value_aad(ctx),
        plaintext.expose_secret(),
    )
    .map(SealedValue)
}

/// Opens a value sealed by [`seal`] for the same `key` and `ctx`. Every failure, whatever its
/// cause, is [`CryptoError::Opaque`].
pub fn open(
    key: &DataKey,
    ctx: &ValueContext,
    sealed: &SealedValue,
) -> Result<Plaintext, CryptoError> {
    open_bytes(key, ctx, &sealed.0)
}

/// [`open`] for sealed bytes held elsewhere (a cached record), without copying them first.
pub fn open_bytes(
    key: &DataKey,
    ctx: &ValueContext,
    sealed: &[u8],
) -> Result<Plaintext, CryptoError> {
    let parts = split(sealed)?;
    // Owned by a wiping type from the start: on a bad tag aws-lc may already have written
    // unauthenticated plaintext here, and that must not outlive the failed call either.
    let mut out = Plaintext::zeroed(parts.ciphertext.len());
    key.aead()
        .open_separate_gather(
            parts.nonce,
            Aad::from(value_aad(ctx)),
            parts.ciphertext,
            parts.tag,
            out.expose_secret_mut(),
        )
        .map_err(|_| CryptoError::Opaque)?;
    Ok(out)
}

/// Wraps `key` under `kek` for `ctx`. Shared by every KEK provider that holds its key in
/// process, so they all produce the same format.
pub(crate) fn wrap_key(
    kek: &LessSafeKey,
    key: &DataKey,
    ctx: &DekContext<'_>,
) -> Result<Vec<u8>, CryptoError> {
    wrap_key_with_nonce(kek, key, ctx, random::random_array())
}

pub(crate) fn wrap_key_with_nonce(
    kek: &LessSafeKey,
    key: &DataKey,
    ctx: &DekContext<'_>,
    nonce: [u8; NONCE_LEN],
) -> Result<Vec<u8>, CryptoError> {
    seal_bytes(kek, nonce, &dek_aad(ctx)?, key.expose_secret())
}

/// Unwraps a key made by [`wrap_key`]. Any failure of the bytes or context is
/// [`CryptoError::Opaque`].
pub(crate) fn unwrap_key(
    kek: &LessSafeKey,
    wrapped: &[u8],
    ctx: &DekContext<'_>,
) -> Result<DataKey, CryptoError> {
    let aad = dek_aad(ctx)?;
    if wrapped.len() != WRAPPED_KEY_LEN {
        return Err(CryptoError::Opaque);
    }
    let parts = split(wrapped)?;
    // Decrypt straight into the key's final zeroizing home, so the key never sits anywhere else.
    let mut key = Box::new(Zeroizing::new([0u8; DATA_KEY_LEN]));
    kek.open_separate_gather(
        parts.nonce,
        Aad::from(aad),
        parts.ciphertext,
        parts.tag,
        &mut key[..],
    )
    .map_err(|_| CryptoError::Opaque)?;
    Ok(DataKey::from_boxed(key))
}

/// `format || nonce || ciphertext || tag`, in one allocation of the final size. Encrypts out of
/// place, so the output never holds plaintext, even if sealing fails half-way.
fn seal_bytes(
    key: &LessSafeKey,
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut out = vec![0u8; ENVELOPE_OVERHEAD + plaintext.len()];
    let (header, body) = out.split_at_mut(HEADER_LEN);
    header[0] = FORMAT_V1;
    header[1..].copy_from_slice(&nonce);
    let (ciphertext, tag) = body.split_at_mut(plaintext.len());
    key.seal_out_of_place_scatter(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        plaintext,
        ciphertext,
        &[],
        tag,
    )
    // The buffer sizes are right by construction, so the only way to get here is a plaintext
    // beyond GCM's limit of 2^36 - 32 bytes under one nonce.
    .map_err(|_| CryptoError::Malformed("plaintext (too long to seal)"))?;
    Ok(out)
}

struct Parts<'a> {
    nonce: Nonce,
    ciphertext: &'a [u8],
    tag: &'a [u8],
}

/// Splits a sealed blob into its fields. Short input and an unknown format are
/// [`CryptoError::Opaque`] like a bad tag, so a caller learns nothing from which check failed.
fn split(sealed: &[u8]) -> Result<Parts<'_>, CryptoError> {
    let body_len = sealed
        .len()
        .checked_sub(ENVELOPE_OVERHEAD)
        .ok_or(CryptoError::Opaque)?;
    let (header, rest) = sealed.split_at(HEADER_LEN);
    let (ciphertext, tag) = rest.split_at(body_len);
    if header[0] != FORMAT_V1 {
        return Err(CryptoError::Opaque);
    }
    let nonce = Nonce::try_assume_unique_for_key(&header[1..]).map_err(|_| CryptoError::Opaque)?;
    Ok(Parts {
        nonce,
        ciphertext,
        tag,
    })
}

/// `len(label) || label || account || store || secret || version (u32 BE) || dek`. Every field
/// after the label has a fixed length, so the encoding is injective without separators.
fn value_aad(ctx: &ValueContext) -> [u8; VALUE_AAD_LEN] {
    let mut aad = [0u8; VALUE_AAD_LEN];
    let mut at = 0;
    for part in [
        &[VALUE_LABEL.len() as u8][..],
        VALUE_LABEL,
        ctx.account.as_bytes(),
        ctx.store.as_bytes(),
        ctx.secret.as_bytes(),
        &ctx.version.0.to_be_bytes(),
        ctx.dek.as_bytes(),
    ] {
        aad[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    debug_assert_eq!(at, VALUE_AAD_LEN);
    aad
}

/// `len(label) || label || len(purpose) || purpose || account flag || account || dek`, where
/// the flag is 1 with the account's id or 0 with sixteen zero bytes. The flag keeps an
/// instance-level key apart from a key of an account whose id happens to be all zeros.
fn dek_aad(ctx: &DekContext<'_>) -> Result<Vec<u8>, CryptoError> {
    let purpose = ctx.purpose.as_bytes();
    // Purposes are short constants in code; a longer one is a programming error, reported
    // rather than truncated into an ambiguous encoding.
    let purpose_len = u8::try_from(purpose.len())
        .map_err(|_| CryptoError::Malformed("key purpose (over 255 bytes)"))?;
    let (flag, account) = match ctx.account {
        Some(account) => (1u8, *account.as_bytes()),
        None => (0u8, [0u8; ID_LEN]),
    };
    let mut aad = Vec::with_capacity(1 + DEK_LABEL.len() + 1 + purpose.len() + 1 + 2 * ID_LEN);
    aad.push(DEK_LABEL.len() as u8);
    aad.extend_from_slice(DEK_LABEL);
    aad.push(purpose_len);
    aad.extend_from_slice(purpose);
    aad.push(flag);
    aad.extend_from_slice(&account);
    aad.extend_from_slice(ctx.dek.as_bytes());
    Ok(aad)
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::aead::{AES_256_GCM, UnboundKey};
    use proptest::prelude::*;

    use super::*;

    fn kat_key() -> DataKey {
        DataKey::from_bytes(&mut std::array::from_fn(|i| i as u8))
    }

    const KAT_NONCE: [u8; NONCE_LEN] = [
        0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab,
    ];

    fn ctx() -> ValueContext {
        ValueContext {
            account: AccountId::from_bytes([0x11; 16]),
            store: StoreId::from_bytes([0x22; 16]),
            secret: SecretId::from_bytes([0x33; 16]),
            version: Version(7),
            dek: DekId::from_bytes([0x44; 16]),
        }
    }

    fn plain(bytes: &[u8]) -> Plaintext {
        Plaintext::new(bytes.to_vec())
    }

    fn opens(key: &DataKey, ctx: &ValueContext, sealed: &SealedValue) -> bool {
        match open(key, ctx, sealed) {
            Ok(_) => true,
            Err(CryptoError::Opaque) => false,
            Err(other) => panic!("open failed with a revealing error: {other:?}"),
        }
    }

    // Known answers computed once, independently of this crate, with Python's `cryptography`
    // package (48.0.0):
    //
    //   from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    //   key = bytes(range(32)); nonce = bytes(range(0xa0, 0xac))
    //   aad = (bytes([15]) + b"coffer/value/v1" + b"\x11" * 16 + b"\x22" * 16 + b"\x33" * 16
    //          + (7).to_bytes(4, "big") + b"\x44" * 16)
    //   (b"\x01" + nonce + AESGCM(key).encrypt(nonce, pt, aad)).hex()
    //
    // with pt = b"coffer known-answer test" and pt = b"".
    const KAT_VALUE: &str = concat!(
        "01a0a1a2a3a4a5a6a7a8a9aaab85771a4b20b922d40c0af0bd2a1baead07c92b",
        "30e6d231189ee04b2ab7e2b14acd0297d8e33e3ed8",
    );
    const KAT_EMPTY: &str = "01a0a1a2a3a4a5a6a7a8a9aaab66aaf3ad0a16c7cc074998707d9c611d";

    #[test]
    fn known_answer_seal_and_open() {
        for (pt, expected) in [
            (&b"coffer known-answer test"[..], KAT_VALUE),
            (b"", KAT_EMPTY),
        ] {
            let sealed = seal_with_nonce(&kat_key(), &ctx(), &plain(pt), KAT_NONCE).unwrap();
            assert_eq!(hex::encode(&sealed.0), expected);
            let from_vector = SealedValue(hex::decode(expected).unwrap());
            assert_eq!(
                open(&kat_key(), &ctx(), &from_vector)
                    .unwrap()
                    .expose_secret(),
                pt
            );
        }
    }

    fn kat_kek() -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[0x77; 32]).unwrap())
    }

    fn dek_ctx(purpose: &str) -> DekContext<'_> {
        DekContext {
            account: Some(AccountId::from_bytes([0x11; 16])),
            dek: DekId::from_bytes([0x44; 16]),
            purpose,
        }
    }

    // Computed with the same Python package. `kek` is the AES key that wraps; a `FileKek` wraps
    // under a subkey derived from its key file, whose vector is in kek.rs.
    //
    //   kek = b"\x77" * 32; nonce = bytes(range(0xb0, 0xbc)); dek = bytes(range(32, 64))
    //   aad = (bytes([13]) + b"coffer/dek/v1" + bytes([3]) + b"dek" + b"\x01" + b"\x11" * 16
    //          + b"\x44" * 16)
    //   (b"\x01" + nonce + AESGCM(kek).encrypt(nonce, dek, aad)).hex()
    //
    // and for the instance-level variant: purpose b"token-mac", account flag 0 + 16 zero bytes.
    const KAT_WRAPPED: &str = concat!(
        "01b0b1b2b3b4b5b6b7b8b9babbeaab62083f27e63267783aed0dec7cf4a05c32",
        "d4778d4c38c8123f8e6f6f91bc849f2f3dfab790f9f49e2f536fa4ef3e",
    );
    const KAT_WRAPPED_INSTANCE: &str = concat!(
        "01b0b1b2b3b4b5b6b7b8b9babbeaab62083f27e63267783aed0dec7cf4a05c32",
        "d4778d4c38c8123f8e6f6f91bcf92c6c4d740e0392554c6bf25d1697e5",
    );

    #[test]
    fn known_answer_wrap_and_unwrap() {
        let nonce: [u8; NONCE_LEN] = std::array::from_fn(|i| 0xb0 + i as u8);
        let dek = DataKey::from_bytes(&mut std::array::from_fn(|i| 32 + i as u8));
        let instance = DekContext {
            account: None,
            ..dek_ctx("token-mac")
        };
        for (ctx, expected) in [
            (dek_ctx("dek"), KAT_WRAPPED),
            (instance, KAT_WRAPPED_INSTANCE),
        ] {
            let wrapped = wrap_key_with_nonce(&kat_kek(), &dek, &ctx, nonce).unwrap();
            assert_eq!(hex::encode(&wrapped), expected);
            let unwrapped = unwrap_key(&kat_kek(), &hex::decode(expected).unwrap(), &ctx).unwrap();
            assert_eq!(unwrapped.expose_secret(), dek.expose_secret());
        }
    }

    #[test]
    fn round_trips_at_boundary_lengths() {
        let key = DataKey::generate();
        for len in [0, 1, 15, 16, 17, 64, 4096, 65536] {
            let pt: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let sealed = seal(&key, &ctx(), &plain(&pt)).unwrap();
            assert_eq!(sealed.0.len(), len + ENVELOPE_OVERHEAD);
            assert_eq!(sealed.0[0], FORMAT_V1);
            assert_eq!(open(&key, &ctx(), &sealed).unwrap().expose_secret(), pt);
        }
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let key = kat_key();
        let a = seal(&key, &ctx(), &plain(b"same")).unwrap();
        let b = seal(&key, &ctx(), &plain(b"same")).unwrap();
        assert_ne!(a.0[1..HEADER_LEN], b.0[1..HEADER_LEN]);
        assert_ne!(a, b);
    }

    #[test]
    fn every_flipped_bit_fails_to_open() {
        let key = kat_key();
        let sealed = seal(
            &key,
            &ctx(),
            &plain(b"a value of forty bytes, give or take.."),
        )
        .unwrap();
        assert!(opens(&key, &ctx(), &sealed));
        for bit in 0..sealed.0.len() * 8 {
            let mut bad = sealed.clone();
            bad.0[bit / 8] ^= 1 << (bit % 8);
            assert!(!opens(&key, &ctx(), &bad), "bit {bit}");
        }
    }

    #[test]
    fn truncated_or_extended_values_fail_to_open() {
        let key = kat_key();
        for pt in [
            &b""[..],
            b"x",
            b"sixteen bytes!!!",
            b"a somewhat longer secret value",
        ] {
            let sealed = seal(&key, &ctx(), &plain(pt)).unwrap();
            for len in 0..sealed.0.len() {
                assert!(
                    !opens(&key, &ctx(), &SealedValue(sealed.0[..len].to_vec())),
                    "{len}"
                );
                // Dropping bytes from the front moves the fields instead of cutting the end.
                assert!(!opens(
                    &key,
                    &ctx(),
                    &SealedValue(sealed.0[sealed.0.len() - len..].to_vec())
                ));
            }
            let mut longer = sealed.0.clone();
            longer.push(0);
            assert!(!opens(&key, &ctx(), &SealedValue(longer)));
        }
    }

    #[test]
    fn unknown_format_bytes_fail_to_open() {
        let key = kat_key();
        let sealed = seal(&key, &ctx(), &plain(b"v")).unwrap();
        for format in [0x00, 0x02, 0x80, 0xff] {
            let mut bad = sealed.clone();
            bad.0[0] = format;
            assert!(!opens(&key, &ctx(), &bad));
        }
    }

    #[test]
    fn every_context_field_is_bound() {
        let key = kat_key();
        let sealed = seal(&key, &ctx(), &plain(b"bound")).unwrap();
        assert!(opens(&key, &ctx(), &sealed));
        let other = [0x99; 16];
        let changed = [
            ValueContext {
                account: AccountId::from_bytes(other),
                ..ctx()
            },
            ValueContext {
                store: StoreId::from_bytes(other),
                ..ctx()
            },
            ValueContext {
                secret: SecretId::from_bytes(other),
                ..ctx()
            },
            ValueContext {
                version: Version(8),
                ..ctx()
            },
            ValueContext {
                version: Version(7 << 24),
                ..ctx()
            },
            ValueContext {
                dek: DekId::from_bytes(other),
                ..ctx()
            },
        ];
        for wrong in changed {
            assert!(!opens(&key, &wrong, &sealed), "{wrong:?}");
        }
    }

    #[test]
    fn wrong_key_fails_to_open() {
        let sealed = seal(&kat_key(), &ctx(), &plain(b"value")).unwrap();
        assert!(!opens(&DataKey::generate(), &ctx(), &sealed));
        let mut near: [u8; 32] = *kat_key().expose_secret();
        near[31] ^= 1;
        assert!(!opens(&DataKey::from_bytes(&mut near), &ctx(), &sealed));
    }

    fn unwraps(kek: &LessSafeKey, wrapped: &[u8], ctx: &DekContext<'_>) -> bool {
        match unwrap_key(kek, wrapped, ctx) {
            Ok(_) => true,
            Err(CryptoError::Opaque) => false,
            Err(other) => panic!("unwrap failed with a revealing error: {other:?}"),
        }
    }

    #[test]
    fn wrapped_keys_are_bound_and_tamper_evident() {
        let kek = kat_kek();
        let dek = DataKey::generate();
        let ctx = dek_ctx("dek");
        let wrapped = wrap_key(&kek, &dek, &ctx).unwrap();
        assert_eq!(wrapped.len(), WRAPPED_KEY_LEN);
        assert!(unwraps(&kek, &wrapped, &ctx));

        for bit in 0..wrapped.len() * 8 {
            let mut bad = wrapped.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(!unwraps(&kek, &bad, &ctx), "bit {bit}");
        }
        for len in 0..wrapped.len() {
            assert!(!unwraps(&kek, &wrapped[..len], &ctx));
        }
        let mut longer = wrapped.clone();
        longer.push(0);
        assert!(!unwraps(&kek, &longer, &ctx));

        let other_kek = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[0x78; 32]).unwrap());
        assert!(!unwraps(&other_kek, &wrapped, &ctx));

        let zero_account = AccountId::from_bytes([0; 16]);
        for wrong in [
            dek_ctx("token-mac"),
            dek_ctx("de"),
            dek_ctx(""),
            DekContext {
                account: None,
                ..ctx
            },
            DekContext {
                account: Some(AccountId::from_bytes([0x12; 16])),
                ..ctx
            },
            DekContext {
                dek: DekId::from_bytes([0x45; 16]),
                ..ctx
            },
        ] {
            assert!(!unwraps(&kek, &wrapped, &wrong), "{wrong:?}");
        }

        // An instance key must not open as the key of an account whose id is all zeros.
        let instance = DekContext {
            account: None,
            ..ctx
        };
        let wrapped = wrap_key(&kek, &dek, &instance).unwrap();
        assert!(unwraps(&kek, &wrapped, &instance));
        assert!(!unwraps(
            &kek,
            &wrapped,
            &DekContext {
                account: Some(zero_account),
                ..ctx
            }
        ));
    }

    #[test]
    fn over_long_purpose_is_refused() {
        let purpose = "p".repeat(256);
        let err = wrap_key(&kat_kek(), &DataKey::generate(), &dek_ctx(&purpose)).unwrap_err();
        assert!(matches!(err, CryptoError::Malformed(_)));
        assert!(wrap_key(&kat_kek(), &DataKey::generate(), &dek_ctx(&purpose[1..])).is_ok());
    }

    #[test]
    fn aad_layout_is_as_documented() {
        let aad = value_aad(&ctx());
        assert_eq!(aad.len(), 84);
        assert_eq!(aad[0], 15);
        assert_eq!(&aad[1..16], b"coffer/value/v1");
        assert_eq!(&aad[64..68], &[0, 0, 0, 7]);
        let aad = dek_aad(&DekContext {
            account: None,
            ..dek_ctx("dek")
        })
        .unwrap();
        let mut expected = vec![13];
        expected.extend_from_slice(b"coffer/dek/v1");
        expected.extend_from_slice(&[3, b'd', b'e', b'k', 0]);
        expected.extend_from_slice(&[0; 16]);
        expected.extend_from_slice(&[0x44; 16]);
        assert_eq!(aad, expected);
    }

    proptest! {
        #[test]
        fn open_inverts_seal(pt in proptest::collection::vec(any::<u8>(), 0..2048), version: u32) {
            let key = kat_key();
            let ctx = ValueContext { version: Version(version), ..ctx() };
            let sealed = seal(&key, &ctx, &plain(&pt)).unwrap();
            let opened = open(&key, &ctx, &sealed).unwrap();
            prop_assert_eq!(opened.expose_secret(), &pt[..]);
        }

        #[test]
        fn any_flipped_bit_fails(pt in proptest::collection::vec(any::<u8>(), 0..256), bit: usize) {
            let key = kat_key();
            let mut sealed = seal(&key, &ctx(), &plain(&pt)).unwrap();
            let bit = bit % (sealed.0.len() * 8);
            sealed.0[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(!opens(&key, &ctx(), &sealed));
        }

        #[test]
        fn garbage_never_opens_or_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            prop_assert!(!opens(&kat_key(), &ctx(), &SealedValue(bytes.clone())));
            prop_assert!(!unwraps(&kat_kek(), &bytes, &dek_ctx("dek")));
        }
    }
}
