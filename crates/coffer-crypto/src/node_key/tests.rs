use std::os::unix::fs::PermissionsExt;

use coffer_types::{AccountId, DekId, TokenId};

use super::*;

fn node(n: u8) -> TokenId {
    TokenId::from_bytes([n; 16])
}

fn ctx() -> DekContext<'static> {
    DekContext {
        account: Some(AccountId::from_bytes([1; 16])),
        dek: DekId::from_bytes([2; 16]),
        purpose: "dek",
    }
}

#[test]
fn a_grant_opens_only_for_its_node_key_node_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let mine = NodeKey::create(&dir.path().join("a")).unwrap();
    let other = NodeKey::create(&dir.path().join("b")).unwrap();
    let rk = DataKey::generate();
    let grant = seal_grant(mine.public_key(), node(1), 3, &rk).unwrap();
    let opened = mine.open_grant(node(1), 3, &grant).unwrap();
    assert_eq!(opened.expose_secret(), rk.expose_secret());
    assert!(matches!(
        other.open_grant(node(1), 3, &grant),
        Err(CryptoError::Opaque)
    ));
    assert!(matches!(
        mine.open_grant(node(2), 3, &grant),
        Err(CryptoError::Opaque)
    ));
    assert!(matches!(
        mine.open_grant(node(1), 4, &grant),
        Err(CryptoError::Opaque)
    ));
    let mut tampered = grant.clone();
    tampered.ephemeral_public = *other.public_key().as_bytes();
    assert!(mine.open_grant(node(1), 3, &tampered).is_err());
}

#[test]
fn rk_wraps_are_bound_to_context_and_version() {
    let rk = DataKey::generate();
    let dek = DataKey::generate();
    let wrapped = rk_wrap(&rk, 7, &dek, &ctx()).unwrap();
    assert_eq!(wrapped.kek_id.0, "rk:7");
    let back = rk_unwrap(&rk, 7, &wrapped.bytes, &ctx()).unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());
    assert!(rk_unwrap(&rk, 8, &wrapped.bytes, &ctx()).is_err());
    let other = DekContext {
        purpose: "token-mac",
        ..ctx()
    };
    assert!(rk_unwrap(&rk, 7, &wrapped.bytes, &other).is_err());
    assert!(rk_unwrap(&DataKey::generate(), 7, &wrapped.bytes, &ctx()).is_err());
}

#[test]
fn rk_kek_ids_parse_strictly() {
    assert_eq!(rk_version_of("rk:12"), Some(12));
    for bad in [
        "rk:",
        "rk:-1",
        "rk:+1",
        "rk:1a",
        "file:0011",
        "rk:99999999999",
    ] {
        assert_eq!(rk_version_of(bad), None, "{bad}");
    }
}

#[test]
fn malformed_public_keys_are_refused() {
    assert!(matches!(
        NodePublicKey::parse(&[7; 31]),
        Err(CryptoError::Malformed(_))
    ));
    assert!(matches!(
        NodePublicKey::parse(&[7; 33]),
        Err(CryptoError::Malformed(_))
    ));
    // The all-zero point has order 1: every shared secret with it is zero.
    assert!(matches!(
        NodePublicKey::parse(&[0; 32]),
        Err(CryptoError::Malformed(_))
    ));
    let dir = tempfile::tempdir().unwrap();
    let key = NodeKey::create(&dir.path().join("k")).unwrap();
    assert_eq!(
        NodePublicKey::parse(key.public_key().as_bytes()).unwrap(),
        *key.public_key()
    );
    // The same point with the top bit set: X25519 would agree with it, so a node could
    // register its node key again as an account key that compares unequal.
    let mut high = *key.public_key().as_bytes();
    high[31] |= 0x80;
    assert!(matches!(
        NodePublicKey::parse(&high),
        Err(CryptoError::Malformed(m)) if m.contains("canonical")
    ));
    // u = p + 9 encodes the base point (u = 9) a second time.
    let mut p_plus_9 = [0xff; 32];
    p_plus_9[31] = 0x7f;
    p_plus_9[0] = 0xed + 9;
    assert!(matches!(
        NodePublicKey::parse(&p_plus_9),
        Err(CryptoError::Malformed(m)) if m.contains("canonical")
    ));
    // Just below p is canonical (and refused, if at all, only as a point).
    let mut below_p = [0xff; 32];
    below_p[31] = 0x7f;
    below_p[0] = 0xec;
    assert!(!matches!(
        NodePublicKey::parse(&below_p),
        Err(CryptoError::Malformed(m)) if m.contains("canonical")
    ));
    let mut nine = [0u8; 32];
    nine[0] = 9;
    NodePublicKey::parse(&nine).unwrap();
}

#[test]
fn the_key_file_is_private_reopens_to_the_same_key_and_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.key");
    let made = NodeKey::open_or_create(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = NodeKey::open_or_create(&path).unwrap();
    assert_eq!(made.public_key(), again.public_key());
    assert!(!format!("{made:?}").contains(&hex::encode(std::fs::read(&path).unwrap())));

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = NodeKey::open(&path).unwrap_err().to_string();
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&path, [1u8; 31]).unwrap();
    let err = NodeKey::open(&path).unwrap_err().to_string();
    assert!(err.contains("exactly 32 bytes"), "{err}");
    assert!(NodeKey::create(&path).is_err(), "never overwrites a key");
}

#[test]
fn granted_keys_open_rk_wraps_from_their_own_grants_and_never_wrap() {
    let dir = tempfile::tempdir().unwrap();
    let key = NodeKey::create(&dir.path().join("k")).unwrap();
    let rk = DataKey::generate();
    let grant = seal_grant(key.public_key(), node(1), 2, &rk).unwrap();
    let stranger = NodeKey::create(&dir.path().join("s")).unwrap();
    let not_mine = seal_grant(stranger.public_key(), node(9), 2, &DataKey::generate()).unwrap();
    let provider = GrantedKeys::new(
        node(1),
        key,
        Box::new(move |v| {
            Ok(if v == 2 {
                vec![(node(9), not_mine.clone()), (node(1), grant.clone())]
            } else {
                vec![]
            })
        }),
    );
    let dek = DataKey::generate();
    let wrapped = rk_wrap(&rk, 2, &dek, &ctx()).unwrap();
    let back = provider.unwrap(&wrapped, &ctx()).unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());
    // A version it holds no grant of, and a KEK wrap (an older replica), are named.
    let newer = rk_wrap(&DataKey::generate(), 3, &dek, &ctx()).unwrap();
    let err = provider.unwrap(&newer, &ctx()).unwrap_err().to_string();
    assert!(
        err.contains("no grant of replication key version 3"),
        "{err}"
    );
    let kek = WrappedDataKey {
        kek_id: KekId("file:00".into()),
        bytes: wrapped.bytes.clone(),
    };
    let err = provider.unwrap(&kek, &ctx()).unwrap_err().to_string();
    assert!(err.contains("resynced"), "{err}");
    assert!(provider.wrap(&dek, &ctx()).is_err());
}

#[test]
fn granted_keys_open_a_grant_of_another_node_id_only_if_sealed_to_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = NodeKey::create(&dir.path().join("k")).unwrap();
    let public = key.public_key().clone();
    let rk = DataKey::generate();
    // The replica was made under node 5's token, with this very key; the edge now runs as 1.
    let grant = seal_grant(&public, node(5), 1, &rk).unwrap();
    let provider = GrantedKeys::new(
        node(1),
        key,
        Box::new(move |_| Ok(vec![(node(5), grant.clone())])),
    );
    let dek = DataKey::generate();
    let wrapped = rk_wrap(&rk, 1, &dek, &ctx()).unwrap();
    assert_eq!(
        provider.unwrap(&wrapped, &ctx()).unwrap().expose_secret(),
        dek.expose_secret()
    );
    // Grants sealed to other keys open nothing, whatever node they name.
    let other = NodeKey::create(&dir.path().join("o")).unwrap();
    let foreign = seal_grant(other.public_key(), node(1), 1, &rk).unwrap();
    let key2 = NodeKey::create(&dir.path().join("k2")).unwrap();
    let provider = GrantedKeys::new(
        node(1),
        key2,
        Box::new(move |_| Ok(vec![(node(1), foreign.clone())])),
    );
    let err = provider.unwrap(&wrapped, &ctx()).unwrap_err().to_string();
    assert!(err.contains("opens with this node's key"), "{err}");
}
