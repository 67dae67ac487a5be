//! Services, their bindings and their tokens; the runtime reads bindings resolve through.

use std::collections::BTreeSet;
use std::sync::Arc;

use coffer_types::{
    AccountId, BindingName, Scope, Scopes, SecretName, ServiceId, ServiceName, StoreId, TokenId,
    Version,
};
use tokio::task::JoinSet;

use super::audit::{assert_audit_chain, entry};
use super::fixtures::{
    Tenant, account_record, all_changes, assert_head, create_secret, id_bytes, store, tenant, ts,
};
use crate::{
    AuditEntry, Change, ChangeSecretBinding, ChangeStoreBinding, Entity, SecretBindingRecord,
    SecretUpdate, ServiceQuery, ServiceRecord, ServiceTokenRecord, Storage, StorageError,
    StoreBindingRecord, VersionRecord,
};

// ---- builders ----

fn binding(name: &str) -> BindingName {
    BindingName::parse(name).expect("fixture: binding name")
}

fn secret_binding(name: &str, store: StoreId, secret: &str) -> SecretBindingRecord {
    SecretBindingRecord {
        binding: binding(name),
        store_id: store,
        secret_name: SecretName::parse(secret).expect("fixture: secret name"),
    }
}

fn store_binding(name: &str, store: StoreId) -> StoreBindingRecord {
    StoreBindingRecord {
        binding: binding(name),
        store_id: store,
    }
}

fn service_name(name: &str) -> ServiceName {
    ServiceName::parse(name).expect("fixture: service name")
}

/// A `workers` service with two secret bindings (deliberately not in name order, so a backend
/// that sorts them fails) and one store binding, all naming a store that need not exist.
pub(super) fn service_record(account: AccountId, name: &str) -> ServiceRecord {
    let store = StoreId::from_bytes(id_bytes());
    ServiceRecord {
        id: ServiceId::from_bytes(id_bytes()),
        account_id: account,
        name: service_name(name),
        kind: Scope::Workers,
        secrets: vec![
            secret_binding("Z_KEY", store, "zeta"),
            secret_binding("A_KEY", store, "alpha"),
        ],
        stores: vec![store_binding("SHARED", store)],
        created: ts(30),
        modified: ts(30),
    }
}

/// A token of `service` created at `ts(created)`, with a hash that is unique to it.
pub(super) fn token_of(service: &ServiceRecord, created: i64) -> ServiceTokenRecord {
    let id = id_bytes();
    let mut hash = [0u8; 32];
    hash[..16].copy_from_slice(&id);
    hash[16..].copy_from_slice(&id_bytes());
    ServiceTokenRecord {
        id: TokenId::from_bytes(id),
        account_id: service.account_id,
        service_id: service.id,
        hash,
        created: ts(created),
        revoked: None,
    }
}

/// Creates `service` with a first token created at `ts(31)`; returns that token.
async fn deploy(s: &dyn Storage, service: &ServiceRecord) -> ServiceTokenRecord {
    let token = token_of(service, 31);
    s.create_service(service.clone(), token.clone(), &[])
        .await
        .expect("fixture: create_service");
    token
}

async fn stored(s: &dyn Storage, service: &ServiceRecord) -> Option<ServiceRecord> {
    s.get_service(service.account_id, service.id).await.unwrap()
}

fn query(page: u32, per_page: u32, name: Option<&str>) -> ServiceQuery {
    ServiceQuery {
        page,
        per_page,
        name: name.map(service_name),
    }
}

fn by_id(mut tokens: Vec<ServiceTokenRecord>) -> Vec<ServiceTokenRecord> {
    tokens.sort_by(|x, y| x.id.as_bytes().cmp(y.id.as_bytes()));
    tokens
}

/// The changes appended since `head`.
async fn changes_since(s: &dyn Storage, head: u64) -> Vec<Change> {
    // From the base: deleting an account compacts the log past its DEKs' entries.
    let (base, base_hash, log) = super::fixtures::retained_changes(s).await;
    super::fixtures::assert_chain_from(base, base_hash, &log);
    assert!(base <= head, "compacted past {head}");
    log.iter()
        .filter(|r| r.seq > head)
        .map(|r| r.change().expect("a change that decodes"))
        .collect()
}

pub(super) fn put_of(service: &ServiceRecord) -> Change {
    Change::ServicePut {
        account_id: service.account_id,
        service_id: service.id,
        name: service.name.as_str().to_owned(),
        kind: service.kind.as_str().to_owned(),
        secrets: service
            .secrets
            .iter()
            .map(|b| ChangeSecretBinding {
                binding: b.binding.as_str().to_owned(),
                store_id: b.store_id,
                secret_name: b.secret_name.as_str().to_owned(),
            })
            .collect(),
        stores: service
            .stores
            .iter()
            .map(|b| ChangeStoreBinding {
                binding: b.binding.as_str().to_owned(),
                store_id: b.store_id,
            })
            .collect(),
    }
}

fn token_put_of(token: &ServiceTokenRecord) -> Change {
    Change::ServiceTokenPut {
        account_id: token.account_id,
        service_id: token.service_id,
        token_id: token.id,
        hash_hex: hex::encode(token.hash),
    }
}

fn revoked_of(token: &ServiceTokenRecord) -> Change {
    Change::ServiceTokenRevoked {
        account_id: token.account_id,
        service_id: token.service_id,
        token_id: token.id,
    }
}

fn assert_err(
    got: Result<impl std::fmt::Debug, StorageError>,
    ok: impl Fn(&StorageError) -> bool,
    what: &str,
) {
    match got {
        Err(e) if ok(&e) => {}
        other => panic!("{what}: unexpected {other:?}"),
    }
}

// ---- checks ----

/// Create, get (by id and by name), the first token, and what create refuses.
pub(super) async fn service_lifecycle(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = account_record("a");
    let b = account_record("b");
    s.create_account(a.clone(), &[]).await.unwrap();
    s.create_account(b.clone(), &[]).await.unwrap();

    let mut svc = service_record(a.id, "ai-gateway");
    svc.kind = Scope::AiGateway;
    svc.modified = ts(33);
    let token = deploy(s, &svc).await;
    assert_eq!(
        stored(s, &svc).await,
        Some(svc.clone()),
        "get_service returns every field as given, bindings in the order given"
    );
    assert_eq!(
        s.get_service_by_name(a.id, &svc.name).await.unwrap(),
        Some(svc.clone()),
        "get_service_by_name finds it"
    );
    assert_eq!(
        s.get_service_token(token.id).await.unwrap(),
        Some(token.clone()),
        "the first token is stored with the service"
    );
    assert_eq!(
        s.list_service_tokens(a.id, svc.id).await.unwrap(),
        vec![token.clone()]
    );

    // Another account sees nothing of it.
    assert_eq!(s.get_service(b.id, svc.id).await.unwrap(), None);
    assert_eq!(s.get_service_by_name(b.id, &svc.name).await.unwrap(), None);
    assert!(
        s.list_service_tokens(b.id, svc.id)
            .await
            .unwrap()
            .is_empty(),
        "another account's service lists no tokens"
    );
    assert_eq!(
        s.get_service(a.id, ServiceId::from_bytes(id_bytes()))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.get_service_by_name(a.id, &service_name("nope"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.get_service_token(TokenId::from_bytes(id_bytes()))
            .await
            .unwrap(),
        None
    );

    // A service without bindings is a service too.
    let mut bare = service_record(a.id, "bare");
    bare.secrets.clear();
    bare.stores.clear();
    deploy(s, &bare).await;
    assert_eq!(stored(s, &bare).await, Some(bare.clone()));

    // What create refuses, each leaving no trace.
    let head = s.change_head().await.unwrap();
    let fresh = |name: &str| service_record(a.id, name);

    let unknown = service_record(AccountId::from_bytes(id_bytes()), "orphan");
    assert_err(
        s.create_service(unknown.clone(), token_of(&unknown, 1), &[])
            .await,
        |e| matches!(e, StorageError::NotFound(Entity::Account)),
        "create_service in an unknown account",
    );

    let x = fresh("x");
    let mut t = token_of(&x, 1);
    t.account_id = b.id;
    assert_err(
        s.create_service(x.clone(), t, &[]).await,
        |e| matches!(e, StorageError::Invalid(_)),
        "a first token of another account",
    );
    let mut t = token_of(&x, 1);
    t.service_id = svc.id;
    assert_err(
        s.create_service(x.clone(), t, &[]).await,
        |e| matches!(e, StorageError::Invalid(_)),
        "a first token of another service",
    );

    let mut dup = fresh("dup-secrets");
    dup.secrets[1].binding = dup.secrets[0].binding.clone();
    assert_err(
        s.create_service(dup.clone(), token_of(&dup, 1), &[]).await,
        |e| matches!(e, StorageError::Invalid(_)),
        "two secret bindings of one name",
    );
    let mut dup = fresh("dup-across");
    dup.stores[0].binding = dup.secrets[1].binding.clone();
    assert_err(
        s.create_service(dup.clone(), token_of(&dup, 1), &[]).await,
        |e| matches!(e, StorageError::Invalid(_)),
        "a store binding named like a secret binding",
    );
    let mut dup = fresh("dup-stores");
    dup.stores.push(dup.stores[0].clone());
    assert_err(
        s.create_service(dup.clone(), token_of(&dup, 1), &[]).await,
        |e| matches!(e, StorageError::Invalid(_)),
        "two store bindings of one name",
    );

    let mut reused = fresh("reused-id");
    reused.id = svc.id;
    assert_err(
        s.create_service(reused.clone(), token_of(&reused, 1), &[])
            .await,
        |e| matches!(e, StorageError::AlreadyExists(Entity::Service)),
        "a used service id",
    );
    let y = fresh("reused-token");
    let mut t = token_of(&y, 1);
    t.id = token.id;
    assert_err(
        s.create_service(y.clone(), t, &[]).await,
        |e| matches!(e, StorageError::AlreadyExists(Entity::ServiceToken)),
        "a used token id",
    );
    assert_head(s, head, "refused service creates").await;
    for name in [
        "orphan",
        "x",
        "dup-secrets",
        "dup-across",
        "dup-stores",
        "reused-id",
        "reused-token",
    ] {
        assert_eq!(
            s.get_service_by_name(a.id, &service_name(name))
                .await
                .unwrap(),
            None,
            "a refused create ({name}) leaves no service"
        );
    }
    assert_eq!(
        stored(s, &svc).await,
        Some(svc.clone()),
        "a refused create with its id leaves the stored service as it was"
    );
    assert_eq!(
        s.get_service_token(token.id).await.unwrap(),
        Some(token),
        "a refused create with its token id leaves the stored token as it was"
    );
}

/// Names are unique per account (`NameTaken`), free in another account.
pub(super) async fn service_names_are_unique_per_account(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = account_record("a");
    let b = account_record("b");
    s.create_account(a.clone(), &[]).await.unwrap();
    s.create_account(b.clone(), &[]).await.unwrap();
    let first = service_record(a.id, "api");
    deploy(s, &first).await;

    let head = s.change_head().await.unwrap();
    let again = service_record(a.id, "api");
    let err = s
        .create_service(again.clone(), token_of(&again, 1), &[])
        .await
        .unwrap_err();
    match err {
        StorageError::NameTaken { entity, name } => {
            assert_eq!(entity, Entity::Service);
            assert_eq!(name, "api", "NameTaken carries the name");
        }
        other => panic!("a second service named api: unexpected {other:?}"),
    }
    assert_head(s, head, "a name clash").await;
    assert_eq!(s.get_service(a.id, again.id).await.unwrap(), None);
    assert_eq!(stored(s, &first).await, Some(first.clone()));

    // Names compare exactly: another case is another name.
    deploy(s, &service_record(a.id, "API")).await;
    // Another account may use the name.
    let other = service_record(b.id, "api");
    deploy(s, &other).await;
    assert_eq!(
        s.get_service_by_name(b.id, &other.name).await.unwrap(),
        Some(other)
    );
    assert_eq!(
        s.get_service_by_name(a.id, &first.name).await.unwrap(),
        Some(first)
    );
}

/// Listing: by name byte-wise, paged, `total_count` over matches, the exact-name filter, and
/// nothing of another account.
pub(super) async fn list_services_pages_orders_and_filters(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = account_record("a");
    let b = account_record("b");
    s.create_account(a.clone(), &[]).await.unwrap();
    s.create_account(b.clone(), &[]).await.unwrap();
    assert_eq!(
        s.list_services(a.id, &query(1, 10, None)).await.unwrap(),
        crate::Page {
            items: Vec::new(),
            total_count: 0
        },
        "an account without services lists none"
    );

    // Created out of name order; "B" < "a" < "a-b" < "a_b" < "b" byte-wise.
    let mut services = Vec::new();
    for (i, name) in ["b", "a_b", "B", "a", "a-b"].into_iter().enumerate() {
        let mut svc = service_record(a.id, name);
        // `created` against the name order, so ordering by it would fail.
        svc.created = ts(100 - i as i64);
        if i % 2 == 0 {
            svc.stores.clear();
        }
        deploy(s, &svc).await;
        services.push(svc);
    }
    deploy(s, &service_record(b.id, "a")).await;
    deploy(s, &service_record(b.id, "aa")).await;
    services.sort_by(|x, y| x.name.as_str().as_bytes().cmp(y.name.as_str().as_bytes()));
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["B", "a", "a-b", "a_b", "b"]);

    let all = s.list_services(a.id, &query(1, 100, None)).await.unwrap();
    assert_eq!(all.total_count, 5, "only the account's own services count");
    assert_eq!(
        all.items, services,
        "ordered by name byte-wise, every field and binding as stored"
    );
    for (page, expected) in [
        (1, &services[0..2]),
        (2, &services[2..4]),
        (3, &services[4..5]),
        (4, &services[5..5]),
    ] {
        let got = s.list_services(a.id, &query(page, 2, None)).await.unwrap();
        assert_eq!(got.items, expected, "page {page} of 2");
        assert_eq!(got.total_count, 5, "total_count is not the page's size");
    }

    let one = s
        .list_services(a.id, &query(1, 10, Some("a-b")))
        .await
        .unwrap();
    assert_eq!(
        one.items,
        vec![services[2].clone()],
        "an exact name matches"
    );
    assert_eq!(one.total_count, 1);
    for missing in ["A", "a-", "aa", "zzz"] {
        let none = s
            .list_services(a.id, &query(1, 10, Some(missing)))
            .await
            .unwrap();
        assert_eq!(
            (none.items.len(), none.total_count),
            (0, 0),
            "the filter {missing:?} is an exact match within the account"
        );
    }
    let past = s
        .list_services(a.id, &query(2, 10, Some("a")))
        .await
        .unwrap();
    assert_eq!(
        (past.items.len(), past.total_count),
        (0, 1),
        "a page past the filtered match is empty but counts it"
    );
}

/// An update replaces kind, bindings and `modified`; name and `created` stay as stored.
pub(super) async fn update_service_replaces_bindings(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = account_record("a");
    let b = account_record("b");
    s.create_account(a.clone(), &[]).await.unwrap();
    s.create_account(b.clone(), &[]).await.unwrap();
    let svc = service_record(a.id, "api");
    let token = deploy(s, &svc).await;
    let neighbour = service_record(a.id, "neighbour");
    deploy(s, &neighbour).await;
    let head = s.change_head().await.unwrap();

    let store = StoreId::from_bytes(id_bytes());
    let mut change = svc.clone();
    change.name = service_name("renamed");
    change.created = ts(999);
    change.modified = ts(50);
    change.kind = Scope::Containers;
    change.secrets = vec![
        secret_binding("NEW", store, "new-secret"),
        // A binding name the old version used, now bound elsewhere.
        secret_binding("A_KEY", store, "other"),
        secret_binding("M", store, "m"),
    ];
    change.stores = vec![store_binding("Z_STORE", store), store_binding("B", store)];
    let got = s.update_service(change.clone(), &[]).await.unwrap();
    let expected = ServiceRecord {
        name: svc.name.clone(),
        created: svc.created,
        ..change.clone()
    };
    assert_eq!(got, expected, "update returns the stored record");
    assert_eq!(
        stored(s, &svc).await,
        Some(expected.clone()),
        "kind, bindings (in the new order) and modified replaced; name and created kept"
    );
    assert_eq!(
        s.get_service_by_name(a.id, &service_name("renamed"))
            .await
            .unwrap(),
        None,
        "update does not rename"
    );
    assert_eq!(
        stored(s, &neighbour).await,
        Some(neighbour.clone()),
        "another service's bindings are untouched"
    );
    assert_eq!(
        s.get_service_token(token.id).await.unwrap(),
        Some(token),
        "tokens survive an update"
    );

    // To no bindings at all.
    let mut empty = expected.clone();
    empty.secrets.clear();
    empty.stores.clear();
    empty.modified = ts(60);
    assert_eq!(s.update_service(empty.clone(), &[]).await.unwrap(), empty);
    assert_eq!(stored(s, &svc).await, Some(empty.clone()));
    assert_eq!(
        changes_since(s, head).await,
        vec![put_of(&expected), put_of(&empty)],
        "each update appends one ServicePut with the stored result"
    );

    // Refusals.
    let head = s.change_head().await.unwrap();
    let mut dup = expected.clone();
    dup.stores[0].binding = binding("NEW");
    assert_err(
        s.update_service(dup, &[]).await,
        |e| matches!(e, StorageError::Invalid(_)),
        "duplicate binding names",
    );
    let mut unknown = expected.clone();
    unknown.id = ServiceId::from_bytes(id_bytes());
    assert_err(
        s.update_service(unknown, &[]).await,
        |e| matches!(e, StorageError::NotFound(Entity::Service)),
        "an unknown service",
    );
    let mut foreign = expected.clone();
    foreign.account_id = b.id;
    assert_err(
        s.update_service(foreign, &[]).await,
        |e| matches!(e, StorageError::NotFound(Entity::Service)),
        "a service of another account",
    );
    assert_head(s, head, "refused updates").await;
    assert_eq!(stored(s, &svc).await, Some(empty));
}

/// Deleting a service deletes its bindings and tokens; the name is free again.
pub(super) async fn delete_service_removes_bindings_and_tokens(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = account_record("a");
    let b = account_record("b");
    s.create_account(a.clone(), &[]).await.unwrap();
    s.create_account(b.clone(), &[]).await.unwrap();
    let svc = service_record(a.id, "api");
    let first = deploy(s, &svc).await;
    let second = token_of(&svc, 40);
    s.create_service_token(second.clone(), None, &[])
        .await
        .unwrap();
    let kept = service_record(a.id, "kept");
    let kept_token = deploy(s, &kept).await;

    let head = s.change_head().await.unwrap();
    assert_err(
        s.delete_service(b.id, svc.id, &[]).await,
        |e| matches!(e, StorageError::NotFound(Entity::Service)),
        "deleting from another account",
    );
    assert_err(
        s.delete_service(a.id, ServiceId::from_bytes(id_bytes()), &[])
            .await,
        |e| matches!(e, StorageError::NotFound(Entity::Service)),
        "deleting an unknown service",
    );
    assert_head(s, head, "refused deletes").await;
    assert_eq!(stored(s, &svc).await, Some(svc.clone()));

    s.delete_service(a.id, svc.id, &[]).await.unwrap();
    assert_eq!(stored(s, &svc).await, None);
    assert_eq!(s.get_service_by_name(a.id, &svc.name).await.unwrap(), None);
    for t in [&first, &second] {
        assert_eq!(
            s.get_service_token(t.id).await.unwrap(),
            None,
            "a deleted service's tokens are gone"
        );
    }
    assert!(
        s.list_service_tokens(a.id, svc.id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        changes_since(s, head).await,
        vec![Change::ServiceDeleted {
            account_id: a.id,
            service_id: svc.id,
        }],
        "delete appends ServiceDeleted only"
    );
    assert_eq!(stored(s, &kept).await, Some(kept.clone()));
    assert_eq!(
        s.get_service_token(kept_token.id).await.unwrap(),
        Some(kept_token),
        "another service's tokens stay"
    );

    let head = s.change_head().await.unwrap();
    assert_err(
        s.delete_service(a.id, svc.id, &[]).await,
        |e| matches!(e, StorageError::NotFound(Entity::Service)),
        "deleting twice",
    );
    assert_head(s, head, "a second delete").await;

    // The name (and, with a new token, everything) can be used again; no old binding lingers.
    let mut again = service_record(a.id, "api");
    again.secrets.truncate(1);
    again.stores.clear();
    deploy(s, &again).await;
    assert_eq!(stored(s, &again).await, Some(again));
}

/// Issuing tokens, with and without revoking the others, and listing them.
pub(super) async fn service_tokens_issue_and_list(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = account_record("a");
    let b = account_record("b");
    s.create_account(a.clone(), &[]).await.unwrap();
    s.create_account(b.clone(), &[]).await.unwrap();
    let svc = service_record(a.id, "api");
    let first = deploy(s, &svc).await;
    let other = service_record(a.id, "other");
    let other_token = deploy(s, &other).await;
    let foreign = service_record(b.id, "api");
    deploy(s, &foreign).await;

    // Without revoke_others: nothing revoked, nothing returned.
    let mut tied = Vec::new();
    for _ in 0..3 {
        let t = token_of(&svc, 50);
        assert_eq!(
            s.create_service_token(t.clone(), None, &[]).await.unwrap(),
            Vec::new(),
            "without revoke_others_at nothing is revoked"
        );
        tied.push(t);
    }
    // One issued already revoked: it is stored as given.
    let mut pre_revoked = token_of(&svc, 45);
    pre_revoked.revoked = Some(ts(46));
    s.create_service_token(pre_revoked.clone(), None, &[])
        .await
        .unwrap();
    let mut expected = vec![first.clone(), pre_revoked.clone()];
    expected.extend(by_id(tied.clone()));
    assert_eq!(
        s.list_service_tokens(a.id, svc.id).await.unwrap(),
        expected,
        "tokens list by created, then id; revoked ones included"
    );

    // With revoke_others_at: every other active token of this service only.
    let head = s.change_head().await.unwrap();
    let newest = token_of(&svc, 60);
    let revoked = s
        .create_service_token(newest.clone(), Some(ts(61)), &[])
        .await
        .unwrap();
    let mut was_active = vec![first.clone()];
    was_active.extend(tied.iter().cloned());
    let was_active = by_id(was_active);
    let expected_revoked: Vec<ServiceTokenRecord> = was_active
        .iter()
        .map(|t| ServiceTokenRecord {
            revoked: Some(ts(61)),
            ..t.clone()
        })
        .collect();
    assert_eq!(
        revoked, expected_revoked,
        "returns the tokens it revoked, as updated, in id order"
    );
    for t in &expected_revoked {
        assert_eq!(s.get_service_token(t.id).await.unwrap().as_ref(), Some(t));
    }
    assert_eq!(
        s.get_service_token(newest.id).await.unwrap(),
        Some(newest.clone()),
        "the new token stays active"
    );
    assert_eq!(
        s.get_service_token(pre_revoked.id).await.unwrap(),
        Some(pre_revoked.clone()),
        "a token revoked before keeps its revocation time"
    );
    assert_eq!(
        s.get_service_token(other_token.id).await.unwrap(),
        Some(other_token.clone()),
        "another service's token is untouched"
    );
    let mut expected_log = vec![token_put_of(&newest)];
    expected_log.extend(was_active.iter().map(revoked_of));
    assert_eq!(
        changes_since(s, head).await,
        expected_log,
        "ServiceTokenPut, then one ServiceTokenRevoked per revoked token in id order"
    );

    // Another service: only its own active token is revoked, then only the one issued since.
    let head = s.change_head().await.unwrap();
    let lone = token_of(&other, 70);
    let got = s
        .create_service_token(lone.clone(), Some(ts(71)), &[])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![ServiceTokenRecord {
            revoked: Some(ts(71)),
            ..other_token.clone()
        }]
    );
    let third = token_of(&other, 72);
    assert!(
        s.create_service_token(third.clone(), Some(ts(73)), &[])
            .await
            .unwrap()
            .len()
            == 1,
        "only `lone` was still active"
    );
    assert_eq!(
        changes_since(s, head).await,
        vec![
            token_put_of(&lone),
            revoked_of(&other_token),
            token_put_of(&third),
            revoked_of(&lone),
        ]
    );

    // Refusals.
    let head = s.change_head().await.unwrap();
    let mut t = token_of(&svc, 80);
    t.service_id = ServiceId::from_bytes(id_bytes());
    assert_err(
        s.create_service_token(t, None, &[]).await,
        |e| matches!(e, StorageError::NotFound(Entity::Service)),
        "a token of an unknown service",
    );
    let mut t = token_of(&svc, 80);
    t.account_id = b.id;
    assert_err(
        s.create_service_token(t, Some(ts(81)), &[]).await,
        |e| matches!(e, StorageError::NotFound(Entity::Service)),
        "a token naming another account than its service's",
    );
    let mut t = token_of(&foreign, 80);
    t.account_id = a.id;
    assert_err(
        s.create_service_token(t, Some(ts(81)), &[]).await,
        |e| matches!(e, StorageError::NotFound(Entity::Service)),
        "a token for another account's service",
    );
    for used in [newest.id, other_token.id] {
        let mut t = token_of(&svc, 80);
        t.id = used;
        assert_err(
            s.create_service_token(t, Some(ts(81)), &[]).await,
            |e| matches!(e, StorageError::AlreadyExists(Entity::ServiceToken)),
            "a used token id (of this or another service)",
        );
    }
    assert_head(s, head, "refused token creates").await;
    assert_eq!(
        s.get_service_token(newest.id).await.unwrap(),
        Some(newest),
        "a refused create with revoke_others_at revoked nothing"
    );
    assert!(
        s.list_service_tokens(b.id, foreign.id)
            .await
            .unwrap()
            .iter()
            .all(|t| t.account_id == b.id),
        "nothing was added to another account's service"
    );
    assert_eq!(
        s.list_service_tokens(b.id, foreign.id).await.unwrap().len(),
        1
    );
    assert!(
        s.list_service_tokens(a.id, ServiceId::from_bytes(id_bytes()))
            .await
            .unwrap()
            .is_empty(),
        "an unknown service lists no tokens"
    );
}

/// Revoking one token or all of a service's active ones.
pub(super) async fn service_tokens_revoke_one_or_all(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = account_record("a");
    let b = account_record("b");
    s.create_account(a.clone(), &[]).await.unwrap();
    s.create_account(b.clone(), &[]).await.unwrap();
    let svc = service_record(a.id, "api");
    let first = deploy(s, &svc).await;
    let mut active = vec![first.clone()];
    for i in 0..3 {
        let t = token_of(&svc, 40 + i);
        s.create_service_token(t.clone(), None, &[]).await.unwrap();
        active.push(t);
    }
    let other = service_record(a.id, "other");
    let other_token = deploy(s, &other).await;

    // One.
    let head = s.change_head().await.unwrap();
    let one = active.remove(2);
    let got = s
        .revoke_service_tokens(a.id, svc.id, Some(one.id), ts(50), &[])
        .await
        .unwrap();
    let one_revoked = ServiceTokenRecord {
        revoked: Some(ts(50)),
        ..one.clone()
    };
    assert_eq!(got, vec![one_revoked.clone()]);
    assert_eq!(
        s.get_service_token(one.id).await.unwrap(),
        Some(one_revoked.clone())
    );
    assert_eq!(changes_since(s, head).await, vec![revoked_of(&one)]);

    let head = s.change_head().await.unwrap();
    assert_err(
        s.revoke_service_tokens(a.id, svc.id, Some(one.id), ts(60), &[])
            .await,
        |e| matches!(e, StorageError::AlreadyRevoked),
        "revoking a revoked token",
    );
    assert_eq!(
        s.get_service_token(one.id).await.unwrap(),
        Some(one_revoked.clone()),
        "the first revocation time stays"
    );
    assert_err(
        s.revoke_service_tokens(a.id, other.id, Some(first.id), ts(60), &[])
            .await,
        |e| matches!(e, StorageError::NotFound(Entity::ServiceToken)),
        "a token of another service",
    );
    assert_err(
        s.revoke_service_tokens(
            a.id,
            svc.id,
            Some(TokenId::from_bytes(id_bytes())),
            ts(60),
            &[],
        )
        .await,
        |e| matches!(e, StorageError::NotFound(Entity::ServiceToken)),
        "an unknown token",
    );
    for only in [None, Some(first.id)] {
        assert_err(
            s.revoke_service_tokens(b.id, svc.id, only, ts(60), &[])
                .await,
            |e| matches!(e, StorageError::NotFound(Entity::Service)),
            "a service of another account",
        );
        assert_err(
            s.revoke_service_tokens(a.id, ServiceId::from_bytes(id_bytes()), only, ts(60), &[])
                .await,
            |e| matches!(e, StorageError::NotFound(Entity::Service)),
            "an unknown service",
        );
    }
    assert_head(s, head, "refused revocations").await;
    assert_eq!(s.get_service_token(first.id).await.unwrap(), Some(first));

    // All: the active ones, in id order; the revoked one and other services untouched.
    let head = s.change_head().await.unwrap();
    let got = s
        .revoke_service_tokens(a.id, svc.id, None, ts(70), &[])
        .await
        .unwrap();
    let active = by_id(active);
    let expected: Vec<ServiceTokenRecord> = active
        .iter()
        .map(|t| ServiceTokenRecord {
            revoked: Some(ts(70)),
            ..t.clone()
        })
        .collect();
    assert_eq!(got, expected, "every active token, as updated, in id order");
    assert_eq!(
        changes_since(s, head).await,
        active.iter().map(revoked_of).collect::<Vec<_>>()
    );
    assert_eq!(
        s.get_service_token(one.id).await.unwrap(),
        Some(one_revoked),
        "an already revoked token keeps its time"
    );
    assert_eq!(
        s.get_service_token(other_token.id).await.unwrap(),
        Some(other_token),
        "another service's token is untouched"
    );
    assert!(
        s.list_service_tokens(a.id, svc.id)
            .await
            .unwrap()
            .iter()
            .all(|t| t.revoked.is_some())
    );

    // Again: nothing active, nothing revoked, nothing logged.
    let head = s.change_head().await.unwrap();
    assert_eq!(
        s.revoke_service_tokens(a.id, svc.id, None, ts(80), &[])
            .await
            .unwrap(),
        Vec::new()
    );
    assert_head(s, head, "revoking all of none").await;
}

/// The exact entries every service write appends, their JSON form, and that no token material
/// but `hash_hex` reaches the log.
pub(super) async fn service_changes_are_logged(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = account_record("a");
    s.create_account(a.clone(), &[]).await.unwrap();
    let head = s.change_head().await.unwrap();

    // Runtime caches are validated against `committed_head`: every service write must move
    // it before it is acknowledged.
    let mut position = s.committed_head();
    let mut moved = |what: &str| {
        let now = s.committed_head();
        assert!(now > position, "{what} must advance committed_head");
        position = now;
    };
    let svc = service_record(a.id, "api");
    let first = deploy(s, &svc).await;
    moved("create_service");
    let mut changed = svc.clone();
    changed.kind = Scope::Dex;
    changed.secrets.reverse();
    changed.modified = ts(40);
    s.update_service(changed.clone(), &[]).await.unwrap();
    moved("update_service");
    let second = token_of(&svc, 41);
    s.create_service_token(second.clone(), Some(ts(42)), &[])
        .await
        .unwrap();
    moved("create_service_token");
    s.revoke_service_tokens(a.id, svc.id, Some(second.id), ts(43), &[])
        .await
        .unwrap();
    moved("revoke_service_tokens");
    s.delete_service(a.id, svc.id, &[]).await.unwrap();
    moved("delete_service");

    let expected = vec![
        put_of(&svc),
        token_put_of(&first),
        put_of(&changed),
        token_put_of(&second),
        revoked_of(&first),
        revoked_of(&second),
        Change::ServiceDeleted {
            account_id: a.id,
            service_id: svc.id,
        },
    ];
    assert_eq!(changes_since(s, head).await, expected);

    // The payloads' JSON form (what edges parse).
    let log: Vec<serde_json::Value> = all_changes(s)
        .await
        .iter()
        .filter(|r| r.seq > head)
        .map(|r| serde_json::from_slice(&r.payload).unwrap())
        .collect();
    let keys = |v: &serde_json::Value| -> BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    };
    let set = |k: &[&str]| -> BTreeSet<String> { k.iter().map(|s| (*s).to_owned()).collect() };
    assert_eq!(log[0]["type"], "service_put");
    assert_eq!(
        keys(&log[0]),
        set(&[
            "type",
            "account_id",
            "service_id",
            "name",
            "kind",
            "secrets",
            "stores"
        ])
    );
    assert_eq!(log[0]["kind"], "workers");
    assert_eq!(log[2]["kind"], "dex");
    assert_eq!(log[0]["service_id"], svc.id.to_string());
    assert_eq!(
        log[0]["secrets"][0],
        serde_json::json!({
            "binding": "Z_KEY",
            "store_id": svc.secrets[0].store_id.to_string(),
            "secret_name": "zeta",
        })
    );
    assert_eq!(
        log[0]["stores"][0],
        serde_json::json!({
            "binding": "SHARED",
            "store_id": svc.stores[0].store_id.to_string(),
        })
    );
    assert_eq!(log[1]["type"], "service_token_put");
    assert_eq!(
        keys(&log[1]),
        set(&["type", "account_id", "service_id", "token_id", "hash_hex"])
    );
    assert_eq!(log[1]["hash_hex"], hex::encode(first.hash));
    assert_eq!(log[4]["type"], "service_token_revoked");
    assert_eq!(
        keys(&log[4]),
        set(&["type", "account_id", "service_id", "token_id"])
    );
    assert_eq!(log[6]["type"], "service_deleted");
    assert_eq!(keys(&log[6]), set(&["type", "account_id", "service_id"]));

    // Each hash appears once, as its token's hash_hex, and nowhere else.
    let raw: Vec<Vec<u8>> = all_changes(s)
        .await
        .into_iter()
        .map(|r| r.payload)
        .collect();
    for token in [&first, &second] {
        let needle = hex::encode(token.hash);
        let hits = raw
            .iter()
            .filter(|p| String::from_utf8_lossy(p).contains(&needle))
            .count();
        assert_eq!(
            hits, 1,
            "a token's hash is logged once, in its ServiceTokenPut"
        );
        assert!(
            !raw.iter().any(|p| p.windows(32).any(|w| w == token.hash)),
            "the raw hash bytes are never logged"
        );
    }
}

/// Audit entries carried by service writes: appended with the change, in the same
/// transaction, and not at all when the change fails (or when an entry is refused).
pub(super) async fn service_writes_append_audit_only_on_success(s: Arc<dyn Storage>) {
    let s = &*s;
    let a = account_record("a");
    s.create_account(a.clone(), &[]).await.unwrap();
    let id = a.id;
    let mut expected: Vec<AuditEntry> = Vec::new();

    let svc = service_record(id, "api");
    let first = token_of(&svc, 31);
    let e = vec![entry(id, "create", "service"), entry(id, "create", "token")];
    s.create_service(svc.clone(), first.clone(), &e)
        .await
        .unwrap();
    expected.extend(e);
    let mut changed = svc.clone();
    changed.kind = Scope::Access;
    let e = [entry(id, "update", "service")];
    s.update_service(changed.clone(), &e).await.unwrap();
    expected.extend(e);
    let second = token_of(&svc, 40);
    let e = [entry(id, "create", "second token")];
    s.create_service_token(second.clone(), Some(ts(41)), &e)
        .await
        .unwrap();
    expected.extend(e);
    let e = [entry(id, "delete", "revoke")];
    s.revoke_service_tokens(id, svc.id, None, ts(42), &e)
        .await
        .unwrap();
    expected.extend(e);

    // Failures append none of their entries.
    let head = s.change_head().await.unwrap();
    let bad = [entry(id, "create", "must not appear")];
    let dup = service_record(id, "api");
    assert!(
        s.create_service(dup.clone(), token_of(&dup, 1), &bad)
            .await
            .is_err()
    );
    let mut unknown = changed.clone();
    unknown.id = ServiceId::from_bytes(id_bytes());
    assert!(s.update_service(unknown.clone(), &bad).await.is_err());
    assert!(
        s.create_service_token(token_of(&unknown, 1), None, &bad)
            .await
            .is_err()
    );
    assert!(
        s.revoke_service_tokens(id, svc.id, Some(second.id), ts(50), &bad)
            .await
            .is_err(),
        "AlreadyRevoked"
    );
    assert!(s.delete_service(id, unknown.id, &bad).await.is_err());
    assert_head(s, head, "refused service writes").await;

    // A refused entry fails the write (fail closed): nothing of it is stored.
    let mut empty_action = entry(id, "", "refused");
    empty_action.action.clear();
    let refused = [empty_action];
    let fresh = service_record(id, "fresh");
    assert_err(
        s.create_service(fresh.clone(), token_of(&fresh, 1), &refused)
            .await,
        |e| matches!(e, StorageError::Invalid(_)),
        "create_service with an entry without action",
    );
    assert_eq!(stored(s, &fresh).await, None);
    let mut again = changed.clone();
    again.kind = Scope::Websearch;
    assert_err(
        s.update_service(again, &refused).await,
        |e| matches!(e, StorageError::Invalid(_)),
        "update_service with an entry without action",
    );
    assert_eq!(stored(s, &svc).await, Some(changed.clone()));
    let third = token_of(&svc, 60);
    assert_err(
        s.create_service_token(third.clone(), None, &refused).await,
        |e| matches!(e, StorageError::Invalid(_)),
        "create_service_token with an entry without action",
    );
    assert_eq!(s.get_service_token(third.id).await.unwrap(), None);
    assert_err(
        s.delete_service(id, svc.id, &refused).await,
        |e| matches!(e, StorageError::Invalid(_)),
        "delete_service with an entry without action",
    );
    assert_eq!(stored(s, &svc).await, Some(changed));
    assert_head(s, head, "writes whose audit entries were refused").await;

    let e = [entry(id, "delete", "service")];
    s.delete_service(id, svc.id, &e).await.unwrap();
    expected.extend(e);

    let records = assert_audit_chain(s, id).await;
    let got: Vec<AuditEntry> = records.into_iter().map(|r| r.entry).collect();
    assert_eq!(
        got, expected,
        "exactly the entries of the writes that succeeded, in order"
    );
}

/// `get_secret_by_name` and `current_value`: the current version by name, within the account.
/// Bindings are not consulted and not touched by deletions.
pub(super) async fn runtime_reads_resolve_by_name(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "a").await;
    let other: Tenant = tenant(s, "b").await;
    let prod = store(s, t, "prod").await;
    let dev = store(s, t, "dev").await;
    let theirs = store(s, other, "prod").await;
    let key = create_secret(s, t, prod, "api-key").await;
    let dev_key = create_secret(s, t, dev, "api-key").await;
    let their_key = create_secret(s, other, theirs, "api-key").await;
    let name = key.record.name.clone();

    assert_eq!(
        s.get_secret_by_name(t.account, prod, &name).await.unwrap(),
        Some(key.record.clone())
    );
    assert_eq!(
        s.current_value(t.account, prod, &name).await.unwrap(),
        Some((key.record.clone(), key.value.clone())),
        "the secret and its current (first) version"
    );
    assert_eq!(
        s.current_value(t.account, dev, &name).await.unwrap(),
        Some((dev_key.record.clone(), dev_key.value.clone())),
        "one name in another store is another secret"
    );
    assert_eq!(
        s.current_value(other.account, theirs, &name).await.unwrap(),
        Some((their_key.record.clone(), their_key.value.clone()))
    );
    // Another account's store is invisible, whichever way round.
    assert_eq!(
        s.get_secret_by_name(t.account, theirs, &name)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.current_value(t.account, theirs, &name).await.unwrap(),
        None
    );
    assert_eq!(
        s.current_value(other.account, prod, &name).await.unwrap(),
        None
    );
    let missing = SecretName::parse("missing").unwrap();
    assert_eq!(
        s.get_secret_by_name(t.account, prod, &missing)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.current_value(t.account, prod, &missing).await.unwrap(),
        None
    );
    assert_eq!(
        s.current_value(t.account, StoreId::from_bytes(id_bytes()), &name)
            .await
            .unwrap(),
        None
    );

    // A service bound to them: deleting the secret and the store leaves its bindings alone.
    let mut svc = service_record(t.account, "api");
    svc.secrets = vec![
        secret_binding("KEY", prod, "api-key"),
        secret_binding("DEV_KEY", dev, "api-key"),
    ];
    svc.stores = vec![store_binding("DEV", dev)];
    deploy(s, &svc).await;

    // A new value: the next read sees version 2, not version 1.
    let v2 = VersionRecord {
        version: Version(2),
        sealed: b"sealed:api-key:2".to_vec(),
        created: ts(40),
        ..key.value.clone()
    };
    let updated = s
        .update_secret(
            SecretUpdate {
                account_id: t.account,
                store_id: prod,
                secret_id: key.record.id,
                expected_version: Version::FIRST,
                value: Some(v2.clone()),
                dek: None,
                scopes: None,
                comment: None,
                modified: ts(40),
            },
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        s.current_value(t.account, prod, &name).await.unwrap(),
        Some((updated.clone(), v2.clone())),
        "the current version after an update"
    );
    // Metadata only: the same version, the new scopes.
    let rescoped = s
        .update_secret(
            SecretUpdate {
                account_id: t.account,
                store_id: prod,
                secret_id: key.record.id,
                expected_version: Version(2),
                value: None,
                dek: None,
                scopes: Some(Scopes::new([Scope::AiGateway])),
                comment: Some("moved".into()),
                modified: ts(41),
            },
            &[],
        )
        .await
        .unwrap();
    let (record, version) = s
        .current_value(t.account, prod, &name)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record, rescoped, "scopes are read with the value");
    assert_eq!(record.scopes, Scopes::new([Scope::AiGateway]));
    assert_eq!(version, v2);
    assert_eq!(
        s.get_secret_by_name(t.account, prod, &name).await.unwrap(),
        Some(rescoped)
    );

    // Deleted secret, deleted store: gone from runtime reads, bindings unchanged.
    s.delete_secrets(t.account, prod, &[key.record.id], &[])
        .await
        .unwrap();
    assert_eq!(s.current_value(t.account, prod, &name).await.unwrap(), None);
    assert_eq!(
        s.get_secret_by_name(t.account, prod, &name).await.unwrap(),
        None
    );
    s.delete_store(t.account, dev, true, &[]).await.unwrap();
    assert_eq!(s.current_value(t.account, dev, &name).await.unwrap(), None);
    assert_eq!(
        stored(s, &svc).await,
        Some(svc.clone()),
        "deleting a bound secret or store leaves the bindings that name it"
    );
    // A secret created again under the bound name is what the binding reads now.
    let reborn = create_secret(s, t, prod, "api-key").await;
    assert_eq!(
        s.current_value(t.account, prod, &name).await.unwrap(),
        Some((reborn.record, reborn.value))
    );
    assert_eq!(
        s.current_value(other.account, theirs, &name).await.unwrap(),
        Some((their_key.record, their_key.value)),
        "the other account's secret of that name is untouched throughout"
    );
}

/// `delete_account` deletes the account's services with their bindings and tokens, logging
/// one `ServiceDeleted` per service (id order) after the stores and before the account.
pub(super) async fn delete_account_removes_services(s: Arc<dyn Storage>) {
    let s = &*s;
    let t = tenant(s, "gone").await;
    let kept = tenant(s, "kept").await;
    let st = store(s, t, "prod").await;
    let secret = create_secret(s, t, st, "k").await;
    let mut services = Vec::new();
    let mut tokens = Vec::new();
    for name in ["c", "a", "b"] {
        let svc = service_record(t.account, name);
        tokens.push(deploy(s, &svc).await);
        let extra = token_of(&svc, 50);
        s.create_service_token(extra.clone(), None, &[])
            .await
            .unwrap();
        tokens.push(extra);
        services.push(svc);
    }
    let kept_svc = service_record(kept.account, "a");
    let kept_token = deploy(s, &kept_svc).await;

    let head = s.change_head().await.unwrap();
    s.delete_account(t.account, &[]).await.unwrap();
    let mut ids: Vec<ServiceId> = services.iter().map(|s| s.id).collect();
    ids.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
    let mut expected = vec![
        Change::SecretDeleted {
            account_id: t.account,
            store_id: st,
            secret_id: secret.record.id,
        },
        Change::StoreDeleted {
            account_id: t.account,
            store_id: st,
        },
    ];
    expected.extend(ids.iter().map(|&service_id| Change::ServiceDeleted {
        account_id: t.account,
        service_id,
    }));
    expected.push(Change::AccountDeleted {
        account_id: t.account,
    });
    assert_eq!(
        changes_since(s, head).await,
        expected,
        "secrets, stores, services (by id), then the account; no entry for tokens"
    );

    for svc in &services {
        assert_eq!(stored(s, svc).await, None);
        assert!(
            s.list_service_tokens(t.account, svc.id)
                .await
                .unwrap()
                .is_empty()
        );
    }
    for token in &tokens {
        assert_eq!(
            s.get_service_token(token.id).await.unwrap(),
            None,
            "a deleted account's service tokens are gone"
        );
    }
    assert_eq!(
        s.list_services(t.account, &query(1, 10, None))
            .await
            .unwrap()
            .total_count,
        0
    );
    assert_eq!(stored(s, &kept_svc).await, Some(kept_svc.clone()));
    assert_eq!(
        s.get_service_token(kept_token.id).await.unwrap(),
        Some(kept_token)
    );

    // The id can be reused and nothing of the old services lingers under it.
    s.create_account(
        crate::AccountRecord {
            id: t.account,
            ..account_record("again")
        },
        &[],
    )
    .await
    .unwrap();
    let again = service_record(t.account, "a");
    deploy(s, &again).await;
    assert_eq!(
        s.list_services(t.account, &query(1, 10, None))
            .await
            .unwrap()
            .items,
        vec![again]
    );
}

/// Racing creates of one service name: exactly one wins, the others are `NameTaken`, and the
/// log holds one `ServicePut` / `ServiceTokenPut` pair.
pub(super) async fn concurrent_creates_of_one_service_name_admit_one(s: Arc<dyn Storage>) {
    const TASKS: usize = 16;
    let a = account_record("a");
    s.create_account(a.clone(), &[]).await.unwrap();
    let head = s.change_head().await.unwrap();
    let mut tasks = JoinSet::new();
    for _ in 0..TASKS {
        let s = Arc::clone(&s);
        let svc = service_record(a.id, "api");
        tasks.spawn(async move {
            let token = token_of(&svc, 1);
            s.create_service(svc.clone(), token, &[])
                .await
                .map(|()| svc)
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            Ok(svc) => winners.push(svc),
            Err(StorageError::NameTaken {
                entity: Entity::Service,
                ..
            }) => {}
            Err(other) => panic!("racing create_service: unexpected {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one create wins");
    let winner = winners.pop().unwrap();
    assert_eq!(
        s.get_service_by_name(a.id, &winner.name).await.unwrap(),
        Some(winner.clone())
    );
    let log = changes_since(&*s, head).await;
    assert_eq!(log.len(), 2);
    assert_eq!(log[0], put_of(&winner));
}
