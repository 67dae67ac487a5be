//! API tokens after creation: listing, revocation, last-used times.

use std::sync::Arc;

use coffer_types::{AccountId, TokenId};
use tokio::task::JoinSet;

use super::fixtures::{account_record, id_bytes, token_record, ts};
use crate::{Entity, Storage, StorageError, TokenRecord};

/// Creates a token of `account` created at `ts(created)`, with `edit` applied.
async fn token(
    s: &dyn Storage,
    account: AccountId,
    created: i64,
    edit: impl FnOnce(&mut TokenRecord),
) -> TokenRecord {
    let mut token = token_record(account);
    token.created = ts(created);
    edit(&mut token);
    s.create_token(token.clone(), &[])
        .await
        .expect("fixture: create_token");
    token
}

/// Tokens are control-plane state: edges never see them, so nothing about them is logged.
async fn assert_unlogged(s: &dyn Storage, head: u64, what: &str) {
    assert_eq!(
        s.change_head().await.unwrap(),
        head,
        "{what} must append nothing to the change log"
    );
}

async fn stored(s: &dyn Storage, id: TokenId) -> TokenRecord {
    s.get_token(id).await.unwrap().expect("the token is stored")
}

pub(super) async fn list_tokens_orders_by_created_then_id(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = account_record("a");
    let b = account_record("b");
    s.create_account(a.clone(), &[]).await.unwrap();
    s.create_account(b.clone(), &[]).await.unwrap();
    assert!(
        s.list_tokens(a.id).await.unwrap().is_empty(),
        "an account without tokens lists none"
    );
    let head = s.change_head().await.unwrap();

    let late = token(s, a.id, 30, |_| {}).await;
    // Three with one `created`: the id breaks the tie, whatever the insertion order.
    let mut tied = Vec::new();
    for i in 0..3u8 {
        tied.push(
            token(s, a.id, 10, |t| {
                t.name = format!("tied {i}");
                if i == 1 {
                    t.revoked = Some(ts(11));
                }
            })
            .await,
        );
    }
    let early = token(s, a.id, 5, |t| {
        t.expires = Some(ts(6));
        t.last_used = None;
    })
    .await;
    let of_b = token(s, b.id, 1, |_| {}).await;

    tied.sort_by(|x, y| x.id.as_bytes().cmp(y.id.as_bytes()));
    let mut expected = vec![early];
    expected.extend(tied);
    expected.push(late);
    assert_eq!(
        s.list_tokens(a.id).await.unwrap(),
        expected,
        "tokens list by `created`, then id; revoked and expired ones included, every field \
         as stored"
    );
    assert_eq!(
        s.list_tokens(b.id).await.unwrap(),
        vec![of_b],
        "an account lists its own tokens only"
    );
    assert!(
        s.list_tokens(AccountId::from_bytes(id_bytes()))
            .await
            .unwrap()
            .is_empty(),
        "an unknown account lists no tokens"
    );
    assert_unlogged(s, head, "creating tokens").await;
}

pub(super) async fn revoke_token_once_and_only_in_its_account(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = account_record("a");
    let b = account_record("b");
    s.create_account(a.clone(), &[]).await.unwrap();
    s.create_account(b.clone(), &[]).await.unwrap();
    let t = token(s, a.id, 5, |_| {}).await;
    let other = token(s, a.id, 6, |_| {}).await;
    let head = s.change_head().await.unwrap();

    let err = s.revoke_token(b.id, t.id, ts(20), &[]).await.unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Token)),
        "revoking a token through another account: {err:?}"
    );
    assert_eq!(
        stored(s, t.id).await,
        t,
        "a refused revocation writes nothing"
    );
    let err = s
        .revoke_token(a.id, TokenId::from_bytes(id_bytes()), ts(20), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Token)),
        "revoking an unknown token: {err:?}"
    );

    let revoked = s.revoke_token(a.id, t.id, ts(20), &[]).await.unwrap();
    let expected = TokenRecord {
        revoked: Some(ts(20)),
        ..t.clone()
    };
    assert_eq!(
        revoked, expected,
        "revoke returns the record with `revoked` set and nothing else changed"
    );
    assert_eq!(
        stored(s, t.id).await,
        expected,
        "get_token sees the revocation"
    );
    assert_eq!(
        s.list_tokens(a.id).await.unwrap(),
        vec![expected.clone(), other.clone()],
        "list_tokens sees the revocation; the other token is untouched"
    );

    let err = s.revoke_token(a.id, t.id, ts(30), &[]).await.unwrap_err();
    assert!(
        matches!(err, StorageError::AlreadyRevoked),
        "revoking twice: {err:?}"
    );
    assert_eq!(
        stored(s, t.id).await,
        expected,
        "a second revocation writes nothing: the first time stays"
    );
    let err = s.revoke_token(b.id, t.id, ts(30), &[]).await.unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Token)),
        "another account learns nothing about a revoked token either: {err:?}"
    );
    // A token created revoked counts as revoked.
    let born_revoked = token(s, a.id, 7, |t| t.revoked = Some(ts(8))).await;
    let err = s
        .revoke_token(a.id, born_revoked.id, ts(30), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::AlreadyRevoked), "{err:?}");
    assert_eq!(stored(s, born_revoked.id).await, born_revoked);

    assert_unlogged(s, head, "revoke_token").await;
}

pub(super) async fn touch_tokens_only_moves_last_used_forward(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = account_record("a");
    let b = account_record("b");
    s.create_account(a.clone(), &[]).await.unwrap();
    s.create_account(b.clone(), &[]).await.unwrap();
    let used = token(s, a.id, 5, |t| t.last_used = Some(ts(6))).await;
    let never = token(s, a.id, 5, |t| t.last_used = None).await;
    let recent = token(s, a.id, 5, |t| t.last_used = Some(ts(100))).await;
    let revoked = token(s, a.id, 5, |t| {
        t.last_used = None;
        t.revoked = Some(ts(7));
    })
    .await;
    let untouched = token(s, b.id, 5, |_| {}).await;
    let head = s.change_head().await.unwrap();

    s.touch_tokens(Vec::new()).await.unwrap();
    s.touch_tokens(vec![
        (used.id, ts(50)),
        (never.id, ts(8)),
        (recent.id, ts(60)),
        (TokenId::from_bytes(id_bytes()), ts(70)),
        // Listed twice, the later time wins whatever the order.
        (used.id, ts(40)),
        (revoked.id, ts(9)),
    ])
    .await
    .expect("a batch with an unknown id succeeds");

    let with_last_used = |t: &TokenRecord, at: i64| TokenRecord {
        last_used: Some(ts(at)),
        ..t.clone()
    };
    assert_eq!(
        stored(s, used.id).await,
        with_last_used(&used, 50),
        "last_used moves forward to the latest time given"
    );
    assert_eq!(
        stored(s, never.id).await,
        with_last_used(&never, 8),
        "a never-used token gets its first time"
    );
    assert_eq!(
        stored(s, recent.id).await,
        recent,
        "an older time does not move last_used back"
    );
    assert_eq!(
        stored(s, revoked.id).await,
        with_last_used(&revoked, 9),
        "touching changes last_used only, also on a revoked token"
    );
    assert_eq!(stored(s, untouched.id).await, untouched);

    s.touch_tokens(vec![(TokenId::from_bytes(id_bytes()), ts(1))])
        .await
        .expect("a batch of unknown ids succeeds and does nothing");
    s.touch_tokens(vec![(used.id, ts(50))]).await.unwrap();
    assert_eq!(
        stored(s, used.id).await,
        with_last_used(&used, 50),
        "the same time again changes nothing"
    );
    assert_eq!(
        s.list_tokens(a.id)
            .await
            .unwrap()
            .iter()
            .map(|t| t.last_used)
            .collect::<Vec<_>>(),
        {
            let mut by_id = [
                (used.id, Some(ts(50))),
                (never.id, Some(ts(8))),
                (recent.id, Some(ts(100))),
                (revoked.id, Some(ts(9))),
            ];
            by_id.sort_by(|x, y| x.0.as_bytes().cmp(y.0.as_bytes()));
            by_id.map(|(_, at)| at).to_vec()
        },
        "list_tokens reports the same last_used times"
    );
    assert_unlogged(s, head, "touch_tokens").await;
}

pub(super) async fn replace_tokens_is_all_or_nothing(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = account_record("a");
    let b = account_record("b");
    s.create_account(a.clone(), &[]).await.unwrap();
    s.create_account(b.clone(), &[]).await.unwrap();
    let old = token(s, a.id, 5, |_| {}).await;
    let elsewhere = token(s, b.id, 6, |_| {}).await;
    let head = s.change_head().await.unwrap();

    // A token of another account among those to revoke: nothing is written.
    let mut new = token_record(a.id);
    new.created = ts(20);
    let err = s
        .replace_tokens(new.clone(), vec![old.id, elsewhere.id], ts(20), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::NotFound(Entity::Token)),
        "replacing another account's token: {err:?}"
    );
    assert_eq!(
        stored(s, old.id).await,
        old,
        "the refused call revoked nothing"
    );
    assert_eq!(
        s.get_token(new.id).await.unwrap(),
        None,
        "nor created the new token"
    );

    s.replace_tokens(new.clone(), vec![old.id], ts(20), &[])
        .await
        .unwrap();
    assert_eq!(
        stored(s, new.id).await,
        new,
        "the new token is stored as given"
    );
    assert_eq!(
        stored(s, old.id).await.revoked,
        Some(ts(20)),
        "the replaced token is revoked at the given time"
    );
    assert_eq!(stored(s, elsewhere.id).await, elsewhere);

    // Replacing an already revoked token: refused, and the second new token is not created.
    let mut again = token_record(a.id);
    again.created = ts(30);
    let err = s
        .replace_tokens(again.clone(), vec![old.id], ts(30), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::AlreadyRevoked),
        "replacing a revoked token: {err:?}"
    );
    assert_eq!(s.get_token(again.id).await.unwrap(), None);
    assert_eq!(
        stored(s, old.id).await.revoked,
        Some(ts(20)),
        "first time stays"
    );
    assert_unlogged(s, head, "replacing tokens").await;
}

/// An account's first token is made once: of concurrent calls one succeeds and the others get
/// `Conflict` with nothing written, and a revoked token still counts as the account's first.
pub(super) async fn create_first_token_makes_one_token_at_most(s: Arc<dyn Storage>) {
    let a = account_record("a");
    let b = account_record("b");
    s.create_account(a.clone(), &[]).await.unwrap();
    s.create_account(b.clone(), &[]).await.unwrap();
    let head = s.change_head().await.unwrap();

    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let (s, t) = (s.clone(), token_record(a.id));
        let audited = super::audit::entry(a.id, "create", &t.id.to_string());
        tasks.spawn(async move { (t.clone(), s.create_first_token(t, &[audited]).await) });
    }
    let results = tasks.join_all().await;
    let made: Vec<&TokenRecord> = results
        .iter()
        .filter_map(|(t, r)| r.is_ok().then_some(t))
        .collect();
    assert_eq!(
        made.len(),
        1,
        "one of 8 concurrent first tokens: {results:?}"
    );
    for (_, r) in results.iter().filter(|(_, r)| r.is_err()) {
        assert!(
            matches!(r, Err(StorageError::Conflict)),
            "a second first token: {r:?}"
        );
    }
    assert_eq!(
        s.list_tokens(a.id).await.unwrap(),
        vec![made[0].clone()],
        "the refused calls wrote nothing"
    );
    assert_unlogged(&*s, head, "create_first_token").await;
    assert_eq!(
        s.audit_entries(a.id, 0, 100).await.unwrap().len(),
        1,
        "only the token made has its audit entry"
    );

    // Revoked, it is still the account's first token.
    s.revoke_token(a.id, made[0].id, ts(50), &[]).await.unwrap();
    let err = s
        .create_first_token(token_record(a.id), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Conflict), "{err:?}");
    assert_eq!(s.list_tokens(a.id).await.unwrap().len(), 1);

    // Another account's tokens are not this one's.
    let other = token_record(b.id);
    s.create_first_token(other.clone(), &[]).await.unwrap();
    assert_eq!(stored(&*s, other.id).await, other);
}
