//! Types that hold secrets in memory.
//!
//! Each type wraps zeroizing storage, prints `[redacted]` under `Debug`, and deliberately lacks
//! `Display`, `Clone`, `Serialize` and `Deref`: the bytes are reached only through
//! `expose_secret()`, so every place that handles a secret in clear can be found with grep.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use coffer_types::TokenId;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{CryptoError, random};

const REDACTED: &str = "[redacted]";

/// A secret value in clear. Built from the request body, consumed by [`crate::seal`], produced by
/// [`crate::open`] only for a runtime read. Its whole buffer is wiped on drop.
pub struct Plaintext(Vec<u8>);

impl Plaintext {
    /// Takes ownership without copying. The whole capacity of `bytes` is wiped on drop, but
    /// copies the caller made while growing the vector are beyond reach: build it at its final
    /// size where possible.
    pub fn new(bytes: Vec<u8>) -> Plaintext {
        Plaintext(bytes)
    }
    /// Takes the string's buffer without copying.
    pub fn from_string(s: String) -> Plaintext {
        Plaintext::new(s.into_bytes())
    }
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A zero-filled buffer for `open` to decrypt into, so the result is owned by a wiping type
    /// before any plaintext (verified or not) is written.
    pub(crate) fn zeroed(len: usize) -> Plaintext {
        Plaintext(vec![0; len])
    }

    pub(crate) fn expose_secret_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

// Its own `Drop` rather than a `Zeroizing<Vec<u8>>` field: zeroize's `Vec` impl clears byte by
// byte with volatile writes (about a microsecond per 4 KiB here, as long as decrypting them),
// while its slice impls are a memset behind an optimization barrier, which the compiler may not
// remove either.
impl Drop for Plaintext {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Zeroes the contents and the spare capacity of `bytes`.
fn wipe(bytes: &mut Vec<u8>) {
    bytes.as_mut_slice().zeroize();
    bytes.spare_capacity_mut().zeroize();
}

impl ZeroizeOnDrop for Plaintext {}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// The length of a [`DataKey`] in bytes (AES-256).
pub const DATA_KEY_LEN: usize = 32;

/// A 256-bit data-encryption key, with its AES-256-GCM key schedule prepared once.
pub struct DataKey {
    /// Boxed so that moving a `DataKey` (into an `Arc`, a map, a return slot) moves a pointer
    /// and leaves no stray copy of the key on the stack.
    bytes: Box<Zeroizing<[u8; DATA_KEY_LEN]>>,
    /// The expanded AES key schedule, built once because `seal`/`open` run per request. It lives
    /// in memory allocated by aws-lc, which cleanses it when the key is freed.
    aead: LessSafeKey,
}

impl DataKey {
    /// A fresh key from the system CSPRNG.
    pub fn generate() -> DataKey {
        let mut bytes = Box::new(Zeroizing::new([0u8; DATA_KEY_LEN]));
        random::fill(&mut bytes[..]);
        DataKey::from_boxed(bytes)
    }

    /// Copies the key out of `bytes` into wiping heap storage, then zeroes `bytes`, so the
    /// caller's copy does not outlive the call.
    ///
    /// Taken by reference because `[u8; 32]` is `Copy`: passed by value, the caller's binding
    /// would stay intact and could not be wiped from here. Copies the caller made before the
    /// call (or that the compiler left in registers or stack slots) remain beyond reach.
    pub fn from_bytes(bytes: &mut [u8; DATA_KEY_LEN]) -> DataKey {
        let mut boxed = Box::new(Zeroizing::new([0u8; DATA_KEY_LEN]));
        boxed.copy_from_slice(&bytes[..]);
        bytes.zeroize();
        DataKey::from_boxed(boxed)
    }

    /// Copies a key out of `bytes` (which the caller wipes: typically a zeroizing buffer a KEK
    /// provider decrypted into) straight into the key's wiping heap storage. Fails unless
    /// `bytes` is exactly [`DATA_KEY_LEN`] long.
    pub fn from_slice(bytes: &[u8]) -> Result<DataKey, CryptoError> {
        if bytes.len() != DATA_KEY_LEN {
            return Err(CryptoError::Malformed("data key (not 32 bytes)"));
        }
        let mut boxed = Box::new(Zeroizing::new([0u8; DATA_KEY_LEN]));
        boxed.copy_from_slice(bytes);
        Ok(DataKey::from_boxed(boxed))
    }

    /// Builds the key schedule for bytes that are already in zeroizing heap storage, so that
    /// generation and unwrapping never hold the key anywhere else.
    pub(crate) fn from_boxed(bytes: Box<Zeroizing<[u8; DATA_KEY_LEN]>>) -> DataKey {
        // Invariant: `UnboundKey::new` rejects only a key whose length differs from the
        // algorithm's, and the array is exactly AES-256's 32 bytes. (aws-lc also fails on an
        // allocation failure, which Rust treats as fatal everywhere else anyway.)
        let unbound = UnboundKey::new(&AES_256_GCM, &bytes[..])
            .expect("a 32-byte key is always a valid AES-256-GCM key");
        DataKey {
            bytes,
            aead: LessSafeKey::new(unbound),
        }
    }

    pub fn expose_secret(&self) -> &[u8; DATA_KEY_LEN] {
        &self.bytes
    }

    pub(crate) fn aead(&self) -> &LessSafeKey {
        &self.aead
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

const TOKEN_ID_HEX_LEN: usize = 32;
/// 256 bits in base64url without padding: ceil(256 / 6) characters.
const TOKEN_SECRET_LEN: usize = 43;

/// What a token is for. The kind is spelled in the token's prefix, so a token sent to the
/// wrong API is recognised (and refused with a message that says so) before any lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// `coffer_…`: an API token for the control-plane API, with a role in an account.
    Api,
    /// `coffersvc_…`: a service token, which can only read the secrets bound to its service
    /// through the runtime API.
    Service,
    /// `coffernode_…`: an edge node's token, which can only read the replication feed.
    Node,
}

impl TokenKind {
    const ALL: [TokenKind; 3] = [TokenKind::Api, TokenKind::Service, TokenKind::Node];

    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Api => "coffer_",
            TokenKind::Service => "coffersvc_",
            TokenKind::Node => "coffernode_",
        }
    }

    fn len(self) -> usize {
        self.prefix().len() + TOKEN_ID_HEX_LEN + 1 + TOKEN_SECRET_LEN
    }
}

/// A token in clear (API, service or node token; not `coffer_api::Token`, the API's record of
/// an API token, which never holds its secret part), as the client sends it: `<prefix><32 hex token id>_<43 base64url chars
/// of 256 random bits>`, where the prefix names its [`TokenKind`]. The id part lets the server
/// find the stored hash without scanning.
pub struct Token {
    id: TokenId,
    kind: TokenKind,
    /// The whole token text, since that is what gets hashed; sized exactly at creation so it
    /// never reallocates and leaves an unwiped copy behind.
    text: Zeroizing<String>,
}

impl Token {
    /// A fresh API token for `id`.
    pub fn generate(id: TokenId) -> Token {
        Token::generate_kind(TokenKind::Api, id)
    }

    /// A fresh token of `kind` for `id`.
    pub fn generate_kind(kind: TokenKind, id: TokenId) -> Token {
        let mut raw = Zeroizing::new([0u8; 32]);
        random::fill(&mut raw[..]);
        let mut text = Zeroizing::new(String::with_capacity(kind.len()));
        text.push_str(kind.prefix());
        text.push_str(&id.to_string());
        text.push('_');
        push_base64url(&raw, &mut text);
        debug_assert_eq!(text.len(), kind.len());
        Token { id, kind, text }
    }

    /// Parses the shape (prefix, id, secret length and alphabet) of a token of any kind and
    /// keeps a wiped copy. Does not authenticate; to check a token a client sent, borrow it
    /// instead ([`PresentedToken::parse`]).
    ///
    /// The error never includes the input: a client that put its token in the wrong place
    /// should not find it echoed into logs or responses.
    pub fn parse(s: &str) -> Result<Token, CryptoError> {
        let presented = PresentedToken::parse(s)?;
        Ok(Token {
            id: presented.id,
            kind: presented.kind,
            text: Zeroizing::new(s.to_owned()),
        })
    }

    /// This token as one a client presents.
    pub fn presented(&self) -> PresentedToken<'_> {
        PresentedToken {
            id: self.id,
            kind: self.kind,
            text: &self.text,
        }
    }

    pub fn id(&self) -> TokenId {
        self.id
    }

    pub fn kind(&self) -> TokenKind {
        self.kind
    }

    pub fn expose_secret(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// A token as a client sent it, its shape checked, borrowed from the request rather than
/// copied: the request's own buffers hold it either way, and checking it is one HMAC of these
/// bytes ([`crate::MacKey::verify_token`]).
#[derive(Clone, Copy)]
pub struct PresentedToken<'a> {
    id: TokenId,
    kind: TokenKind,
    text: &'a str,
}

impl<'a> PresentedToken<'a> {
    /// Parses the shape (prefix, id, secret length and alphabet) of a token of any kind.
    /// Does not authenticate.
    ///
    /// The error never includes the input: a client that put its token in the wrong place
    /// should not find it echoed into logs or responses.
    pub fn parse(s: &'a str) -> Result<PresentedToken<'a>, CryptoError> {
        let malformed = || CryptoError::Malformed("api token");
        let (kind, rest) = TokenKind::ALL
            .into_iter()
            .find_map(|kind| {
                (s.len() == kind.len())
                    .then(|| s.strip_prefix(kind.prefix()))
                    .flatten()
                    .map(|rest| (kind, rest))
            })
            .ok_or_else(malformed)?;
        // `get` rather than indexing: the input is untrusted and may split a UTF-8 character.
        let id = rest
            .get(..TOKEN_ID_HEX_LEN)
            .and_then(|hex| TokenId::parse(hex).ok())
            .ok_or_else(malformed)?;
        let secret = rest
            .get(TOKEN_ID_HEX_LEN..)
            .and_then(|tail| tail.strip_prefix('_'))
            .ok_or_else(malformed)?;
        if !is_canonical_base64url_32(secret.as_bytes()) {
            return Err(malformed());
        }
        Ok(PresentedToken { id, kind, text: s })
    }

    pub fn id(&self) -> TokenId {
        self.id
    }

    pub fn kind(&self) -> TokenKind {
        self.kind
    }

    pub fn expose_secret(&self) -> &'a str {
        self.text
    }
}

impl fmt::Debug for PresentedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Appends 32 bytes as unpadded base64url. Writes straight into the caller's (zeroizing) buffer
/// so the encoded secret has no intermediate copy.
fn push_base64url(bytes: &[u8; 32], out: &mut String) {
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(char::from(BASE64URL[((acc >> bits) & 63) as usize]));
        }
    }
    // 256 = 42 * 6 + 4: the last character carries 4 bits, padded with two zero bits.
    out.push(char::from(BASE64URL[((acc << (6 - bits)) & 63) as usize]));
    acc.zeroize();
}

/// Whether `s` is what [`push_base64url`] produces for some 32 bytes. Besides the alphabet, the
/// two padding bits of the last character must be zero, so each secret has exactly one spelling.
fn is_canonical_base64url_32(s: &[u8]) -> bool {
    // Checked on every authenticated request: arithmetic, not a search of the alphabet.
    let value = |c: u8| -> Option<u8> {
        match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'-' => Some(62),
            b'_' => Some(63),
            _ => None,
        }
    };
    s.len() == TOKEN_SECRET_LEN
        && s.iter().all(|&c| value(c).is_some())
        && s.last().and_then(|&c| value(c)).is_some_and(|v| v & 3 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_id() -> TokenId {
        TokenId::from_bytes([0x5a; 16])
    }

    fn valid_token() -> String {
        format!(
            "coffer_{}_{}",
            "5a".repeat(16),
            "A".repeat(TOKEN_SECRET_LEN)
        )
    }

    #[test]
    fn debug_is_redacted_for_every_secret_type() {
        let bytes = [0xc3u8; 32];
        let plain = Plaintext::new(b"hunter2-plaintext".to_vec());
        let key = DataKey::from_bytes(&mut [0xc3; 32]);
        let token = Token::generate(token_id());
        for (debug, secret) in [
            (format!("{plain:?}"), "hunter2".to_owned()),
            (format!("{key:?}"), hex::encode(bytes)),
            (format!("{key:#?}"), format!("{:?}", &bytes[..4])),
            (format!("{token:?}"), token.expose_secret().to_owned()),
            (
                format!("{:?}", token.presented()),
                token.expose_secret().to_owned(),
            ),
        ] {
            assert_eq!(debug, "[redacted]");
            assert!(!debug.contains(&secret));
        }
        // Also inside containers, where a derived Debug would forward to the field.
        assert_eq!(format!("{:?}", Some(&plain)), "Some([redacted])");
    }

    #[test]
    fn plaintext_exposes_exactly_its_bytes() {
        let p = Plaintext::from_string("héllo".to_owned());
        assert_eq!(p.expose_secret(), "héllo".as_bytes());
        assert_eq!(p.len(), 6);
        assert!(!p.is_empty());
        assert!(Plaintext::new(Vec::new()).is_empty());
    }

    #[test]
    fn wipe_zeroes_the_contents() {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&[0xa5; 40]);
        wipe(&mut v);
        assert_eq!(v, [0; 40]);
        assert_eq!(v.capacity(), 64);
    }

    #[test]
    fn data_key_from_a_slice_takes_exactly_32_bytes() {
        let bytes: Vec<u8> = (0..32).collect();
        assert_eq!(
            &DataKey::from_slice(&bytes).unwrap().expose_secret()[..],
            &bytes[..]
        );
        for len in [0, 31, 33] {
            assert!(matches!(
                DataKey::from_slice(&vec![1; len]),
                Err(CryptoError::Malformed(_))
            ));
        }
    }

    #[test]
    fn data_key_keeps_its_bytes_and_generates_fresh_ones() {
        let expected: [u8; 32] = std::array::from_fn(|i| i as u8);
        let mut source = expected;
        let key = DataKey::from_bytes(&mut source);
        assert_eq!(key.expose_secret(), &expected);
        assert_eq!(source, [0u8; 32], "the caller's copy is wiped");
        let a = DataKey::generate();
        let b = DataKey::generate();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_ne!(a.expose_secret(), &[0u8; 32]);
    }

    #[test]
    fn generated_token_round_trips_through_parse() {
        for _ in 0..200 {
            let token = Token::generate(token_id());
            let text = token.expose_secret();
            assert_eq!(text.len(), TokenKind::Api.len());
            assert!(text.starts_with(&format!("coffer_{}_", "5a".repeat(16))));
            let parsed = Token::parse(text).expect("a generated token parses");
            assert_eq!(parsed.id(), token_id());
            assert_eq!(parsed.kind(), TokenKind::Api);
            assert_eq!(parsed.expose_secret(), text);

            let service = Token::generate_kind(TokenKind::Service, token_id());
            let text = service.expose_secret();
            assert!(text.starts_with(&format!("coffersvc_{}_", "5a".repeat(16))));
            let parsed = Token::parse(text).expect("a generated service token parses");
            assert_eq!(parsed.kind(), TokenKind::Service);
            assert_eq!(parsed.id(), token_id());

            let node = Token::generate_kind(TokenKind::Node, token_id());
            let text = node.expose_secret();
            assert_eq!(text.len(), TokenKind::Node.len());
            assert!(text.starts_with(&format!("coffernode_{}_", "5a".repeat(16))));
            let parsed = Token::parse(text).expect("a generated node token parses");
            assert_eq!(parsed.kind(), TokenKind::Node);
            assert_eq!(parsed.id(), token_id());
            assert_eq!(parsed.expose_secret(), text);

            // Borrowed, as a request presents it: the same id, kind and bytes, not a copy.
            for token in [&token, &service, &node] {
                let text = token.expose_secret();
                let presented = PresentedToken::parse(text).expect("a generated token parses");
                assert_eq!(presented.id(), token.id());
                assert_eq!(presented.kind(), token.kind());
                assert!(std::ptr::eq(presented.expose_secret(), text));
            }
        }
        let a = Token::generate(token_id());
        let b = Token::generate(token_id());
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[test]
    fn base64url_matches_known_encodings() {
        // Checked against Python: base64.urlsafe_b64encode(bytes(range(32))).rstrip(b"=")
        let mut out = String::new();
        push_base64url(&std::array::from_fn(|i| i as u8), &mut out);
        assert_eq!(out, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8");
        let mut out = String::new();
        push_base64url(&[0xff; 32], &mut out);
        assert_eq!(out, "__________________________________________8");
        assert!(is_canonical_base64url_32(out.as_bytes()));
    }

    #[test]
    fn malformed_tokens_are_rejected_without_echo() {
        let good = valid_token();
        assert!(Token::parse(&good).is_ok());
        let id = "5a".repeat(16);
        let secret = "A".repeat(TOKEN_SECRET_LEN);
        let bad = [
            String::new(),
            format!("Coffer_{id}_{secret}"),
            format!("cofer__{id}_{secret}"),
            format!("coffer-{id}_{secret}"),
            format!("coffer_{}_{secret}", "5A".repeat(16)),
            format!("coffer_{}_{secret}", "5g".repeat(16)),
            format!("coffer_{id}-{secret}"),
            format!("coffer_{id}_{}", &secret[1..]),
            format!("coffer_{id}_{secret}A"),
            format!("coffer_{id}_{secret}\n"),
            format!(" {good}"),
            format!("coffer_{id}_{}+", &secret[1..]),
            format!("coffer_{id}_{}/", &secret[1..]),
            format!("coffer_{id}_{}=", &secret[1..]),
            // Right alphabet, but the last character has non-zero padding bits.
            format!("coffer_{id}_{}B", &secret[1..]),
            // Right byte length, with a multi-byte character straddling the id boundary.
            format!("coffer_{}é_{}", &id[..31], &secret[1..]),
            format!("coffer_{id}_{}é", &secret[2..]),
            good.replace("coffer_", "coffer__")[..TokenKind::Api.len()].to_owned(),
            // A service-token prefix with an API token's length, and the reverse.
            good.replace("coffer_", "coffersvc_")[..TokenKind::Api.len()].to_owned(),
            format!("coffer_{id}_{secret}xxx"),
            format!("coffersvc{id}_{secret}"),
            // The node prefix with the lengths of the other kinds, and near-miss prefixes.
            good.replace("coffer_", "coffernode_")[..TokenKind::Api.len()].to_owned(),
            format!("coffernode_{id}_{secret}")[..TokenKind::Service.len()].to_owned(),
            format!("coffernode{id}_{secret}"),
            format!("coffernodes_{id}_{}", &secret[1..]),
            format!("Coffernode_{id}_{secret}"),
            format!("coffernode_{id}_{secret}A"),
        ];
        for input in bad {
            let err = Token::parse(&input).expect_err(&format!("accepted {input:?}"));
            assert!(matches!(err, CryptoError::Malformed("api token")));
            let shown = err.to_string();
            assert_eq!(shown, "malformed api token");
            assert!(input.is_empty() || !shown.contains(&input));
            assert!(!format!("{err:?}").contains(&secret[..20]));
        }
    }

    #[test]
    fn padding_bits_of_last_character() {
        let ok: Vec<char> = BASE64URL
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                let mut s = vec![b'A'; TOKEN_SECRET_LEN - 1];
                s.push(**c);
                is_canonical_base64url_32(&s)
            })
            .map(|(_, c)| char::from(*c))
            .collect();
        assert_eq!(ok.into_iter().collect::<String>(), "AEIMQUYcgkosw048");
    }
}
