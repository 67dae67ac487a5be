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

#[test]
fn an_account_grant_opens_only_for_its_key_node_account_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let mine = NodeKey::create(&dir.path().join("a")).unwrap();
    let other = NodeKey::create(&dir.path().join("b")).unwrap();
    let ark = DataKey::generate();
    let grant = seal_account_grant(mine.public_key(), node(1), account(7), 3, &ark).unwrap();
    let opened = mine
        .open_account_grant(node(1), account(7), 3, &grant)
        .unwrap();
    assert_eq!(opened.expose_secret(), ark.expose_secret());
    for (key, n, a, v) in [
        (&other, 1, 7, 3),
        (&mine, 2, 7, 3),
        (&mine, 1, 8, 3),
        (&mine, 1, 7, 4),
    ] {
        assert!(
            matches!(
                key.open_account_grant(node(n), account(a), v, &grant),
                Err(CryptoError::Opaque)
            ),
            "node {n} account {a} version {v}"
        );
    }
    // An account grant is no node grant, and a node grant no account grant.
    assert!(mine.open_grant(node(1), 3, &grant).is_err());
    let node_grant = seal_grant(mine.public_key(), node(1), 3, &ark).unwrap();
    assert!(
        mine.open_account_grant(node(1), account(7), 3, &node_grant)
            .is_err()
    );
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

/// Known answers for the account grant of docs/envelope-format.md: fixed X25519 keys (node key
/// seed 0x11, ephemeral 0x22), node 0x33.., account 0x44.., ARK version 5, ARK 0x55...
#[test]
fn known_answer_account_grant() {
    let recipient = node_key(0x11);
    let ephemeral = x25519(0x22);
    let e_pub = ephemeral.compute_public_key().unwrap();
    let shared = agreement::agree(
        &ephemeral,
        UnparsedPublicKey::new(&X25519, &recipient.public_key().as_bytes()[..]),
        CryptoError::Opaque,
        |s| Ok(s.to_vec()),
    )
    .unwrap();
    let derived = account_grant_key_bytes(
        &shared,
        node(0x33),
        account(0x44),
        5,
        e_pub.as_ref(),
        recipient.public_key().as_bytes(),
    )
    .unwrap();
    let mut info = Vec::new();
    info.extend_from_slice(&[0x33; 16]);
    info.extend_from_slice(&[0x44; 16]);
    info.extend_from_slice(&5u32.to_be_bytes());
    info.extend_from_slice(e_pub.as_ref());
    info.extend_from_slice(recipient.public_key().as_bytes());
    assert_eq!(
        *derived,
        rfc5869(b"coffer/account-grant/v1", &shared, &info)
    );
    let mut bytes = [0x55; 32];
    let again = seal_account_grant_with(
        &ephemeral,
        recipient.public_key(),
        node(0x33),
        account(0x44),
        5,
        &DataKey::from_bytes(&mut bytes),
    )
    .unwrap();
    assert_eq!(hex::encode(*derived), KAT_GRANT_KEY);

    // A grant sealed once with these inputs (its nonce was random then) opens to the ARK.
    let grant = Grant {
        ephemeral_public: e_pub.as_ref().try_into().unwrap(),
        sealed: hex::decode(KAT_SEALED).unwrap(),
    };
    let ark = recipient
        .open_account_grant(node(0x33), account(0x44), 5, &grant)
        .unwrap();
    assert_eq!(ark.expose_secret(), &[0x55; 32]);
    assert!(
        recipient
            .open_account_grant(node(0x33), account(0x45), 5, &grant)
            .is_err()
    );
    assert_eq!(again.ephemeral_public, grant.ephemeral_public);
    assert_eq!(again.sealed.len(), 61);
    assert_eq!(again.sealed[0], 0x01);
}

const KAT_GRANT_KEY: &str = "6aacb01490d3e756249499f9c437d09a54f5d683972fb10d19e9cfae6875d84d";
const KAT_SEALED: &str = "0117d10c029483487d7330a27f76e472bdcd03c85e7d996ac65a69f3e49a1c862605ac5cf2c67ec0d442f670d5505650d0ab3ecae379d6566cf872e694";
