//! Operator-token rotation: the old token stops at once, the new one is the operator, the
//! rotation is audited by id only, and no one else may rotate.

use std::sync::Arc;

use coffer_crypto::{FileKek, KekProvider, Token};
use coffer_storage::{SqliteStorage, Storage};
use coffer_types::AccountId;

use crate::{
    Coffer, CoreError, DekPolicy, Limits, NewToken, Permission, Principal, RequestContext, Role,
};

struct Fx {
    _dir: tempfile::TempDir,
    coffer: Coffer,
    account: AccountId,
    token: Token,
    op: Principal,
}

async fn fx() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let kek: Arc<dyn KekProvider> = Arc::new(FileKek::create(&dir.path().join("kek")).unwrap());
    let storage: Arc<dyn Storage> = Arc::new(SqliteStorage::open(&dir.path().join("db")).unwrap());
    let coffer = Coffer::open(storage, kek, Limits::default(), DekPolicy::default())
        .await
        .unwrap();
    let (account, token) = coffer.bootstrap("acme").await.unwrap();
    // Authenticated once, so the old token's row is in the token cache.
    let op = coffer
        .authenticate(token.expose_secret(), RequestContext::default())
        .await
        .unwrap();
    Fx {
        _dir: dir,
        coffer,
        account,
        token,
        op,
    }
}

impl Fx {
    async fn payloads(&self) -> Vec<(Vec<u8>, serde_json::Value)> {
        self.coffer
            .storage()
            .audit_entries(self.account, 0, 10_000)
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.entry.payload.clone(),
                    serde_json::from_slice(&r.entry.payload).unwrap(),
                )
            })
            .collect()
    }

    async fn auth(&self, token: &Token) -> Result<Principal, CoreError> {
        self.coffer
            .authenticate(token.expose_secret(), RequestContext::default())
            .await
    }
}

/// Checks what both forms share: old refused, new the operator, one audit entry by id only,
/// the chain verifies.
async fn assert_rotated(f: &Fx, new: &Token, new_id: coffer_types::TokenId) -> serde_json::Value {
    let err = f.auth(&f.token).await.unwrap_err();
    assert!(
        matches!(err, CoreError::Unauthenticated(m) if m.contains("revoked")),
        "the old operator token still works: {err:?}"
    );
    let who = f.auth(new).await.unwrap();
    assert!(who.operator && who.role == Role::SuperAdmin, "{who:?}");
    assert_eq!((who.token_id, who.account_id), (new_id, f.account));
    let entries = f.payloads().await;
    let rotations: Vec<_> = entries
        .iter()
        .filter(|(_, p)| p["action"] == "rotate" && p["outcome"] == "success")
        .collect();
    assert_eq!(rotations.len(), 1, "{entries:?}");
    let entry = rotations[0].1.clone();
    assert_eq!(entry["resource"]["type"], "token");
    assert_eq!(entry["resource"]["token_id"], new_id.to_string());
    assert_eq!(
        entry["revoked_token_ids"],
        serde_json::json!([f.op.token_id.to_string()])
    );
    for secret in [f.token.expose_secret(), new.expose_secret()] {
        let tail = &secret[secret.len() - 43..];
        for (raw, _) in &entries {
            let text = String::from_utf8_lossy(raw);
            assert!(
                !text.contains(tail),
                "a token value in the audit log: {text}"
            );
        }
    }
    f.coffer.checkpoint_audit().await.unwrap();
    let verified = f.coffer.verify_audit(&who, f.account).await.unwrap();
    assert_eq!(verified.first_bad, None, "{verified:?}");
    entry
}

#[tokio::test]
async fn the_operator_rotates_its_token_online() {
    let f = fx().await;
    let (record, new) = f.coffer.rotate_operator_token(Some(&f.op)).await.unwrap();
    assert!(record.operator && record.revoked.is_none());
    let entry = assert_rotated(&f, &new, record.id).await;
    assert_eq!(entry["actor"]["token_id"], f.op.token_id.to_string());
    assert_eq!(entry["actor"]["operator"], true);
    // The new token rotates in turn; the previous one is not revoked twice.
    let who = f.auth(&new).await.unwrap();
    let (third, third_value) = f.coffer.rotate_operator_token(Some(&who)).await.unwrap();
    assert!(f.auth(&new).await.is_err());
    assert_eq!(f.auth(&third_value).await.unwrap().token_id, third.id);
}

#[tokio::test]
async fn the_instance_rotates_the_operator_token_offline() {
    let f = fx().await;
    let (record, new) = f.coffer.rotate_operator_token(None).await.unwrap();
    let entry = assert_rotated(&f, &new, record.id).await;
    assert_eq!(entry["actor"]["token_name"], "coffer operator rotate");
    assert!(entry["actor"].get("token_id").is_none(), "{entry}");
}

#[tokio::test]
async fn no_one_but_the_operator_rotates_it() {
    let f = fx().await;
    let (_, admin) = f
        .coffer
        .create_token(
            &f.op,
            f.account,
            NewToken {
                name: "admin".into(),
                role: Role::SuperAdmin,
                expires: None,
            },
        )
        .await
        .unwrap();
    let admin = f.auth(&admin).await.unwrap();
    let err = f
        .coffer
        .rotate_operator_token(Some(&admin))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoreError::Forbidden(Permission::Operator)),
        "{err:?}"
    );
    // Nothing changed: the operator token works, and the refusal is recorded.
    assert!(f.auth(&f.token).await.unwrap().operator);
    let denied = f
        .payloads()
        .await
        .into_iter()
        .filter(|(_, p)| p["action"] == "rotate" && p["outcome"] == "denied")
        .count();
    assert_eq!(denied, 1);
    let tokens = f.coffer.storage().list_tokens(f.account).await.unwrap();
    assert_eq!(tokens.iter().filter(|t| t.operator).count(), 1);
}
