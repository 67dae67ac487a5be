//! What is stored: values sealed under their own (account, store, secret, version, DEK) context,
//! opened here with the data dir's KEK file, as an edge would. Also duplicate and update at the
//! core level.
//!
//! Moving ciphertexts between rows is the crypto crate's test; here we check that core seals
//! each value for the right context, and that duplicate and update keep values intact.

use coffer_core::{CreateSecretItem, DuplicateSecret, UpdateSecret};
use coffer_crypto::{
    DekContext, FileKek, KekId, KekProvider, Plaintext, SealedValue, ValueContext, WrappedDataKey,
    open,
};
use coffer_storage::{SecretRecord, VersionRecord};
use coffer_types::{AccountId, Scopes, SecretId, SecretName, StoreId, Version};
use serde_json::json;

use crate::support::*;

/// The purpose string core binds DEK wraps to (see coffer-core's keyring).
const DEK_PURPOSE: &str = "dek";

struct Opener {
    kek: FileKek,
    account: AccountId,
}

impl Opener {
    fn new(h: &Harness) -> Opener {
        Opener {
            kek: FileKek::open(&h.data_dir.join("kek.key")).expect("KEK file"),
            account: AccountId::parse(&h.account).unwrap(),
        }
    }

    async fn version(&self, h: &Harness, secret: SecretId, version: u32) -> VersionRecord {
        h.coffer
            .storage()
            .get_version(secret, Version(version))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("version {version} of {secret}"))
    }

    /// Opens `sealed` as if it were `version` of `secret` in `store`.
    async fn open_as(
        &self,
        h: &Harness,
        record: &VersionRecord,
        store: StoreId,
        secret: SecretId,
        version: u32,
    ) -> Option<Vec<u8>> {
        let dek = h
            .coffer
            .storage()
            .get_dek(record.dek_id)
            .await
            .unwrap()
            .expect("the version's DEK is stored");
        assert_eq!(dek.account_id, self.account);
        let key = self
            .kek
            .unwrap(
                &WrappedDataKey {
                    kek_id: KekId(dek.key.kek_id.clone()),
                    bytes: dek.key.wrapped.clone(),
                },
                &DekContext {
                    account: Some(self.account),
                    dek: dek.key.id,
                    purpose: DEK_PURPOSE,
                },
            )
            .expect("the KEK unwraps the DEK");
        let ctx = ValueContext {
            account: self.account,
            store,
            secret,
            version: Version(version),
            dek: record.dek_id,
        };
        open(&key, &ctx, &SealedValue(record.sealed.clone()))
            .ok()
            .map(|p| p.expose_secret().to_vec())
    }

    /// The plaintext of `version` of `secret`, opened under its own context.
    async fn value(&self, h: &Harness, store: StoreId, secret: SecretId, version: u32) -> Vec<u8> {
        let record = self.version(h, secret, version).await;
        assert_eq!(record.secret_id, secret);
        assert_eq!(record.version, Version(version));
        self.open_as(h, &record, store, secret, version)
            .await
            .unwrap_or_else(|| panic!("version {version} of {secret} does not open"))
    }
}

fn ids(store: &str, secret: &serde_json::Value) -> (StoreId, SecretId) {
    (
        StoreId::parse(store).unwrap(),
        SecretId::parse(secret["id"].as_str().unwrap()).unwrap(),
    )
}

#[tokio::test]
async fn values_open_under_their_own_context_after_update_and_duplicate() {
    let h = Harness::new().await;
    let o = Opener::new(&h);
    let store = h.create_store("prod").await;
    let other_store = h.create_store("other").await;
    let a = h.create_secret(&store, "A", "alpha").await;
    let (st, a_id) = ids(&store, &a);
    assert_eq!(o.value(&h, st, a_id, 1).await, b"alpha");

    let r = h
        .patch(
            &format!("/stores/{store}/secrets/{a_id}"),
            &json!({ "value": "alpha-2" }),
        )
        .await;
    assert_ok(&r);
    assert_eq!(o.value(&h, st, a_id, 2).await, b"alpha-2");
    assert_eq!(
        o.value(&h, st, a_id, 1).await,
        b"alpha",
        "old versions stay"
    );

    // A metadata-only update adds no version.
    let r = h
        .patch(
            &format!("/stores/{store}/secrets/{a_id}"),
            &json!({ "comment": "c" }),
        )
        .await;
    assert_ok(&r);
    assert!(
        h.coffer
            .storage()
            .get_version(a_id, Version(3))
            .await
            .unwrap()
            .is_none(),
        "a comment change made a value version"
    );

    // Duplicate copies the current value, resealed for the copy.
    let r = h
        .post(
            &format!("/stores/{store}/secrets/{a_id}/duplicate"),
            &json!({ "name": "B", "scopes": ["workers"] }),
        )
        .await;
    let b = assert_ok(&r);
    let (_, b_id) = ids(&store, &b);
    assert_eq!(o.value(&h, st, b_id, 1).await, b"alpha-2");
    let r = h
        .post(
            &format!("/stores/{store}/secrets/{b_id}/duplicate"),
            &json!({ "name": "C", "scopes": ["workers"] }),
        )
        .await;
    let c = assert_ok(&r);
    let (_, c_id) = ids(&store, &c);
    assert_eq!(o.value(&h, st, c_id, 1).await, b"alpha-2");
    let r = h
        .patch(
            &format!("/stores/{store}/secrets/{c_id}"),
            &json!({ "value": "gamma" }),
        )
        .await;
    assert_ok(&r);
    assert_eq!(o.value(&h, st, c_id, 2).await, b"gamma");
    assert_eq!(
        o.value(&h, st, b_id, 1).await,
        b"alpha-2",
        "the copy's copy is separate"
    );
    assert_eq!(
        o.value(&h, st, a_id, 2).await,
        b"alpha-2",
        "the source is unchanged"
    );

    // Each sealed value opens only under its own context: core binds the secret, the version
    // and the store, not some constant.
    let a2 = o.version(&h, a_id, 2).await;
    let other = StoreId::parse(&other_store).unwrap();
    assert!(o.open_as(&h, &a2, st, a_id, 2).await.is_some());
    assert!(
        o.open_as(&h, &a2, st, b_id, 2).await.is_none(),
        "another secret"
    );
    assert!(
        o.open_as(&h, &a2, st, a_id, 1).await.is_none(),
        "another version"
    );
    assert!(
        o.open_as(&h, &a2, other, a_id, 2).await.is_none(),
        "another store"
    );
    let b1 = o.version(&h, b_id, 1).await;
    assert_ne!(b1.sealed, a2.sealed, "a copy is resealed, not copied");
    assert!(o.open_as(&h, &b1, st, a_id, 1).await.is_none());
}

fn record(items: Vec<SecretRecord>) -> SecretRecord {
    assert_eq!(items.len(), 1);
    items.into_iter().next().unwrap()
}

/// The same through core directly, without HTTP.
#[tokio::test]
async fn core_duplicate_and_update_keep_values_intact() {
    let h = Harness::new().await;
    let o = Opener::new(&h);
    let coffer = &h.coffer;
    let who = coffer
        .authenticate(&h.token, Default::default())
        .await
        .expect("the init token");
    let account = AccountId::parse(&h.account).unwrap();
    let store = StoreId::parse(&h.create_store("core").await).unwrap();
    let scopes = Scopes::parse(&["workers"]).unwrap();

    let a = record(
        coffer
            .create_secrets(
                &who,
                account,
                store,
                vec![CreateSecretItem {
                    name: SecretName::parse("A").unwrap(),
                    value: Plaintext::new(b"one".to_vec()),
                    scopes: scopes.clone(),
                    comment: Default::default(),
                }],
            )
            .await
            .unwrap(),
    );
    assert_eq!(a.version, Version(1));
    let a2 = coffer
        .update_secret(
            &who,
            account,
            store,
            a.id,
            UpdateSecret {
                value: Some(Plaintext::new(b"two".to_vec())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(a2.version, Version(2));
    assert_eq!(a2.scopes, scopes);
    let b = coffer
        .duplicate_secret(
            &who,
            account,
            store,
            a.id,
            DuplicateSecret {
                name: SecretName::parse("B").unwrap(),
                scopes: scopes.clone(),
                comment: None,
            },
        )
        .await
        .unwrap();
    assert_ne!(b.id, a.id);
    assert_eq!(b.version, Version(1));
    let b2 = coffer
        .update_secret(
            &who,
            account,
            store,
            b.id,
            UpdateSecret {
                value: Some(Plaintext::new(b"three".to_vec())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let c = coffer
        .duplicate_secret(
            &who,
            account,
            store,
            b.id,
            DuplicateSecret {
                name: SecretName::parse("C").unwrap(),
                scopes,
                comment: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(o.value(&h, store, a.id, 1).await, b"one");
    assert_eq!(o.value(&h, store, a.id, 2).await, b"two");
    assert_eq!(o.value(&h, store, b.id, 1).await, b"two");
    assert_eq!(o.value(&h, store, b.id, b2.version.0).await, b"three");
    assert_eq!(o.value(&h, store, c.id, 1).await, b"three");
}
