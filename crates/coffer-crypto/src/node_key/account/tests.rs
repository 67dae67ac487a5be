use aws_lc_rs::hmac;
use coffer_types::{AccountId, DekId, TokenId};

use super::*;
use crate::node_key::seal_grant;

fn account(n: u8) -> AccountId {
    AccountId::from_bytes([n; 16])
}

fn node(n: u8) -> TokenId {
    TokenId::from_bytes([n; 16])
}

fn dek_ctx(account: AccountId) -> DekContext<'static> {
    DekContext {
        account: Some(account),
        dek: DekId::from_bytes([2; 16]),
        purpose: "dek",
    }
}

fn x25519(seed: u8) -> PrivateKey {
    PrivateKey::from_private_key(&X25519, &[seed; 32]).unwrap()
}

fn node_key(seed: u8) -> NodeKey {
    NodeKey::from_private(std::path::Path::new("/nonexistent/kat.key"), x25519(seed)).unwrap()
}

fn to<'a>(account_key: &'a NodeKey, node_key: &'a NodeKey) -> AccountGrantRecipient<'a> {
    AccountGrantRecipient {
        account_key: account_key.public_key(),
        node_key: node_key.public_key(),
    }
}

#[test]
fn an_account_grant_opens_only_with_both_keys_for_its_node_account_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let key = |name: &str| NodeKey::create(&dir.path().join(name)).unwrap();
    let (mine, node_key, other, other_node) = (key("a"), key("n"), key("b"), key("m"));
    let ark = DataKey::generate();
    let grant = seal_account_grant(to(&mine, &node_key), node(1), account(7), 3, &ark).unwrap();
    let opened = mine
        .open_account_grant(&node_key, node(1), account(7), 3, &grant)
        .unwrap();
    assert_eq!(opened.expose_secret(), ark.expose_secret());
    for (key, with, n, a, v) in [
        // The node account key alone (with any other key as the node's) opens nothing: what a
        // node token alone can register captures no ARK.
        (&mine, &other_node, 1, 7, 3),
        (&mine, &mine, 1, 7, 3),
        // Nor the node key alone, nor the two swapped.
        (&node_key, &node_key, 1, 7, 3),
        (&node_key, &mine, 1, 7, 3),
        (&other, &node_key, 1, 7, 3),
        (&mine, &node_key, 2, 7, 3),
        (&mine, &node_key, 1, 8, 3),
        (&mine, &node_key, 1, 7, 4),
    ] {
        assert!(
            matches!(
                key.open_account_grant(with, node(n), account(a), v, &grant),
                Err(CryptoError::Opaque)
            ),
            "node {n} account {a} version {v}"
        );
    }
    // An account grant is no node grant, and a node grant no account grant.
    assert!(mine.open_grant(node(1), 3, &grant).is_err());
    assert!(node_key.open_grant(node(1), 3, &grant).is_err());
    let node_grant = seal_grant(mine.public_key(), node(1), 3, &ark).unwrap();
    assert!(
        mine.open_account_grant(&node_key, node(1), account(7), 3, &node_grant)
            .is_err()
    );
    // A grant sealed to one key twice would need only one private key: refused.
    assert!(matches!(
        seal_account_grant(to(&mine, &mine), node(1), account(7), 3, &ark),
        Err(CryptoError::Malformed(_))
    ));
}

#[test]
fn ark_wraps_are_bound_to_account_context_and_version_and_differ_from_rk_wraps() {
    let ark = DataKey::generate();
    let dek = DataKey::generate();
    let wrapped = ark_wrap(&ark, 2, &dek, &dek_ctx(account(1))).unwrap();
    assert_eq!(wrapped.kek_id.0, "ark:2");
    let back = ark_unwrap(&ark, 2, &wrapped.bytes, &dek_ctx(account(1))).unwrap();
    assert_eq!(back.expose_secret(), dek.expose_secret());
    assert!(ark_unwrap(&ark, 3, &wrapped.bytes, &dek_ctx(account(1))).is_err());
    assert!(ark_unwrap(&ark, 2, &wrapped.bytes, &dek_ctx(account(9))).is_err());
    assert!(
        ark_unwrap(
            &DataKey::generate(),
            2,
            &wrapped.bytes,
            &dek_ctx(account(1))
        )
        .is_err()
    );
    // The same key used as an RK of the same version does not open it.
    assert!(crate::rk_unwrap(&ark, 2, &wrapped.bytes, &dek_ctx(account(1))).is_err());
    let instance = DekContext {
        account: None,
        ..dek_ctx(account(1))
    };
    assert!(matches!(
        ark_wrap(&ark, 2, &dek, &instance),
        Err(CryptoError::Malformed(_))
    ));
}

#[test]
fn ark_kek_ids_parse_strictly() {
    assert_eq!(ark_version_of("ark:12"), Some(12));
    assert_eq!(ark_kek_id(4).0, "ark:4");
    for bad in [
        "ark:",
        "ark:-1",
        "ark:+1",
        "ark:1a",
        "rk:3",
        "ark:99999999999",
    ] {
        assert_eq!(ark_version_of(bad), None, "{bad}");
    }
    assert_eq!(crate::rk_version_of("ark:3"), None);
}

/// HKDF-SHA256 (RFC 5869) computed with HMAC alone, to check the derivation's layout against
/// docs/envelope-format.md independently of the code under test.
fn rfc5869(salt: &[u8], ikm: &[u8], info: &[u8]) -> [u8; 32] {
    let prk = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, salt), ikm);
    let mut block = info.to_vec();
    block.push(1);
    let okm = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref()), &block);
    okm.as_ref().try_into().unwrap()
}

/// Known answers for the account grant of docs/envelope-format.md: fixed X25519 keys
/// (node account key seed 0x11, node key seed 0x66, ephemeral 0x22), node 0x33.., account
/// 0x44.., ARK version 5, ARK 0x55...
#[test]
fn known_answer_account_grant() {
    let account_key = node_key(0x11);
    let own_node_key = node_key(0x66);
    let ephemeral = x25519(0x22);
    let e_pub = ephemeral.compute_public_key().unwrap();
    let dh = |public: &NodePublicKey| {
        agreement::agree(
            &ephemeral,
            UnparsedPublicKey::new(&X25519, &public.as_bytes()[..]),
            CryptoError::Opaque,
            |s| Ok(s.to_vec()),
        )
        .unwrap()
    };
    let mut ikm = dh(account_key.public_key());
    ikm.extend_from_slice(&dh(own_node_key.public_key()));
    let mut shared = Zeroizing::new([0u8; 64]);
    shared.copy_from_slice(&ikm);
    let e_pub_bytes: [u8; 32] = e_pub.as_ref().try_into().unwrap();
    let derived = account_grant_key_bytes(
        &shared,
        GrantFor {
            node: node(0x33),
            account: account(0x44),
            version: 5,
            ephemeral_public: &e_pub_bytes,
            account_public: account_key.public_key().as_bytes(),
            node_public: own_node_key.public_key().as_bytes(),
        },
    )
    .unwrap();
    let mut info = Vec::new();
    info.extend_from_slice(&[0x33; 16]);
    info.extend_from_slice(&[0x44; 16]);
    info.extend_from_slice(&5u32.to_be_bytes());
    info.extend_from_slice(e_pub.as_ref());
    info.extend_from_slice(account_key.public_key().as_bytes());
    info.extend_from_slice(own_node_key.public_key().as_bytes());
    assert_eq!(*derived, rfc5869(b"coffer/account-grant/v2", &ikm, &info));
    let mut bytes = [0x55; 32];
    let again = seal_account_grant_with(
        &ephemeral,
        to(&account_key, &own_node_key),
        node(0x33),
        account(0x44),
        5,
        &DataKey::from_bytes(&mut bytes),
    )
    .unwrap();
    assert_eq!(hex::encode(*derived), KAT_GRANT_KEY);

    // A grant sealed with these inputs by another implementation opens to the ARK.
    let grant = Grant {
        ephemeral_public: e_pub_bytes,
        sealed: hex::decode(KAT_SEALED).unwrap(),
    };
    let ark = account_key
        .open_account_grant(&own_node_key, node(0x33), account(0x44), 5, &grant)
        .unwrap();
    assert_eq!(ark.expose_secret(), &[0x55; 32]);
    assert!(
        account_key
            .open_account_grant(&own_node_key, node(0x33), account(0x45), 5, &grant)
            .is_err()
    );
    assert_eq!(again.ephemeral_public, grant.ephemeral_public);
    assert_eq!(again.sealed.len(), 61);
    assert_eq!(again.sealed[0], 0x01);
}

const KAT_GRANT_KEY: &str = "2fc6d216cfa3a3529178ba3e2d77d9dae97ed9bbc3155bcccc6129f4c92a6f8d";
/// Sealed outside this code (Python `cryptography`, docs/envelope-format.md) with the nonce
/// b0 b1 .. bb.
const KAT_SEALED: &str = "01b0b1b2b3b4b5b6b7b8b9babbdbfefb8380b938ab097eeb506a14787949a7f27755ddd2b1cbae15089b1e6be26466243fe2bd483dc486e4be18996317";
