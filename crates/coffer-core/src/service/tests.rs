use std::time::Duration;

use coffer_crypto::FileKek;
use coffer_storage::{Change, SqliteStorage};
use coffer_types::{Scope, TokenId};

use crate::Role;

use super::*;
use crate::Comment;
use coffer_crypto::{Plaintext, random_id};
use coffer_storage::SecretRecord;
use coffer_types::{Scopes, SecretId, SecretName, StoreId, StoreName, Version};

struct Fixture {
    _dir: tempfile::TempDir,
    coffer: Coffer,
    /// The storage under `coffer`, for its write counters and hooks.
    sqlite: Arc<SqliteStorage>,
    /// The operator (`coffer init`'s token) of `account`.
    operator: Principal,
    account: AccountId,
    store: StoreId,
}

async fn fixture(limits: Limits, policy: DekPolicy) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let kek: Arc<dyn KekProvider> = Arc::new(FileKek::create(&dir.path().join("kek")).unwrap());
    let sqlite = Arc::new(SqliteStorage::open(&dir.path().join("db")).unwrap());
    let storage: Arc<dyn Storage> = sqlite.clone();
    let coffer = Coffer::open(storage, kek, limits, policy).await.unwrap();
    let (account, token) = coffer.bootstrap("acme").await.unwrap();
    let operator = coffer
        .authenticate(token.expose_secret(), Default::default())
        .await
        .unwrap();
    let store = coffer
        .create_store(&operator, account, StoreName::parse("prod").unwrap())
        .await
        .unwrap()
        .id;
    Fixture {
        _dir: dir,
        coffer,
        sqlite,
        operator,
        account,
        store,
    }
}

async fn default_fixture() -> Fixture {
    fixture(Limits::default(), DekPolicy::default()).await
}

/// A principal of `account` that is not the operator.
fn member(account: AccountId, role: Role) -> Principal {
    Principal {
        token_id: TokenId::from_bytes(random_id()),
        token_name: "member".into(),
        account_id: account,
        role,
        operator: false,
        context: crate::RequestContext::default(),
    }
}

fn item(name: &str, value: &str) -> CreateSecretItem {
    CreateSecretItem {
        name: SecretName::parse(name).unwrap(),
        value: Plaintext::new(value.as_bytes().to_vec()),
        scopes: Scopes::new([Scope::Workers]),
        comment: Comment::default(),
    }
}

impl Fixture {
    async fn create(&self, names: &[&str]) -> Result<Vec<SecretRecord>, CoreError> {
        let items = names.iter().map(|n| item(n, "value")).collect();
        self.coffer
            .create_secrets(&self.operator, self.account, self.store, items)
            .await
    }

    async fn head(&self) -> u64 {
        self.coffer.storage().change_head().await.unwrap()
    }

    async fn dek_puts(&self) -> usize {
        self.coffer
            .storage()
            .changes_after(0, 10_000)
            .await
            .unwrap()
            .iter()
            .filter(|c| matches!(c.change().unwrap(), Change::DekPut { .. }))
            .count()
    }
}

#[tokio::test]
async fn a_create_refused_for_quota_leaves_no_dek_behind() {
    let f = fixture(
        Limits {
            default_secrets_quota: 0,
            ..Limits::default()
        },
        DekPolicy::default(),
    )
    .await;
    let head = f.head().await;
    let err = f.create(&["A"]).await.unwrap_err();
    assert!(matches!(err, CoreError::QuotaExceeded { .. }), "{err:?}");
    assert_eq!(
        f.head().await,
        head,
        "a refused create writes nothing, not even the DEK it was sealed under"
    );
    assert_eq!(
        f.coffer.storage().latest_dek(f.account).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn writes_store_their_new_deks_only_when_they_succeed() {
    // Every seal makes a new DEK, so every write below carries one.
    let f = fixture(
        Limits::default(),
        DekPolicy {
            max_age: Duration::from_secs(3600),
            max_seals: 1,
        },
    )
    .await;
    let created = f.create(&["A"]).await.unwrap();
    assert_eq!(f.dek_puts().await, 1);
    let head = f.head().await;

    let err = f.create(&["B", "A"]).await.unwrap_err();
    assert!(matches!(err, CoreError::NameTaken { .. }), "{err:?}");
    let dup = DuplicateSecret {
        name: SecretName::parse("A").unwrap(),
        scopes: Scopes::default(),
        comment: None,
    };
    let err = f
        .coffer
        .duplicate_secret(&f.operator, f.account, f.store, created[0].id, dup)
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::NameTaken { .. }), "{err:?}");
    assert_eq!(f.head().await, head, "failed writes leave no DEK behind");

    let update = UpdateSecret {
        value: Some(Plaintext::new(b"two".to_vec())),
        ..UpdateSecret::default()
    };
    let updated = f
        .coffer
        .update_secret(&f.operator, f.account, f.store, created[0].id, update)
        .await
        .unwrap();
    let version = f
        .coffer
        .storage()
        .get_version(updated.id, updated.version)
        .await
        .unwrap()
        .unwrap();
    assert!(
        f.coffer
            .storage()
            .get_dek(version.dek_id)
            .await
            .unwrap()
            .is_some(),
        "a successful update stores the DEK its value is sealed under"
    );
    assert_eq!(f.head().await, head + 2, "one dek_put and one secret_put");
    assert_eq!(f.dek_puts().await, 2);
}

#[tokio::test]
async fn a_bulk_create_stores_its_shared_dek_once() {
    let f = default_fixture().await;
    f.create(&["A", "B", "C"]).await.unwrap();
    f.create(&["D"]).await.unwrap();
    assert_eq!(f.dek_puts().await, 1);
}

#[tokio::test]
async fn opening_a_secret_deleted_since_it_was_read_is_not_found() {
    let f = default_fixture().await;
    let created = f.create(&["SOURCE"]).await.unwrap();
    let read = f
        .coffer
        .get_secret(&f.operator, f.account, f.store, created[0].id)
        .await
        .unwrap();
    f.coffer
        .delete_secrets(&f.operator, f.account, f.store, &[read.id])
        .await
        .unwrap();
    // What a duplicate racing the delete of its source meets between its two reads.
    let err = f.coffer.open_current(&read).await.unwrap_err();
    assert!(
        matches!(err, CoreError::NotFound(Resource::Secret)),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_empty_update_writes_nothing() {
    let f = default_fixture().await;
    let created = f.create(&["KEY"]).await.unwrap();
    let head = f.head().await;
    let got = f
        .coffer
        .update_secret(
            &f.operator,
            f.account,
            f.store,
            created[0].id,
            UpdateSecret::default(),
        )
        .await
        .unwrap();
    assert_eq!(got, created[0], "the current record, `modified` unchanged");
    assert_eq!(f.head().await, head, "no change-log entry");

    // It is still checked like any update.
    let reporter = member(f.account, Role::SecretsStoreReporter);
    let err = f
        .coffer
        .update_secret(
            &reporter,
            f.account,
            f.store,
            created[0].id,
            UpdateSecret::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoreError::Forbidden(Permission::Edit)),
        "{err:?}"
    );
    let err = f
        .coffer
        .update_secret(
            &f.operator,
            f.account,
            f.store,
            SecretId::from_bytes(random_id()),
            UpdateSecret::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoreError::NotFound(Resource::Secret)),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_account_quota_override_applies_and_clears() {
    let f = fixture(
        Limits {
            default_secrets_quota: 3,
            ..Limits::default()
        },
        DekPolicy::default(),
    )
    .await;
    let (who, account) = (&f.operator, f.account);
    assert_eq!(
        f.coffer.quota(who, account).await.unwrap(),
        Quota { quota: 3, usage: 0 }
    );

    let set = f
        .coffer
        .set_account_quota(who, account, Some(1))
        .await
        .unwrap();
    assert_eq!(set, Quota { quota: 1, usage: 0 });
    assert_eq!(f.coffer.quota(who, account).await.unwrap(), set);
    assert_eq!(
        f.coffer
            .get_account(who, account)
            .await
            .unwrap()
            .secrets_quota,
        Some(1)
    );
    f.create(&["A"]).await.unwrap();
    let err = f.create(&["B"]).await.unwrap_err();
    assert!(
        matches!(
            err,
            CoreError::QuotaExceeded {
                quota: 1,
                usage: 1,
                requested: 1
            }
        ),
        "{err:?}"
    );

    let cleared = f
        .coffer
        .set_account_quota(who, account, None)
        .await
        .unwrap();
    assert_eq!(cleared, Quota { quota: 3, usage: 1 });
    assert_eq!(
        f.coffer
            .get_account(who, account)
            .await
            .unwrap()
            .secrets_quota,
        None
    );
    f.create(&["B", "C"]).await.unwrap();
    assert!(matches!(
        f.create(&["D"]).await,
        Err(CoreError::QuotaExceeded { quota: 3, .. })
    ));
}

#[tokio::test]
async fn only_an_operator_sets_a_quota() {
    let f = default_fixture().await;
    let admin = member(f.account, Role::SuperAdmin);
    let err = f
        .coffer
        .set_account_quota(&admin, f.account, Some(5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoreError::Forbidden(Permission::Operator)),
        "the account's own super admin: {err:?}"
    );
    let weak_operator = Principal {
        role: Role::SecretsStoreAdmin,
        ..f.operator.clone()
    };
    let err = f
        .coffer
        .set_account_quota(&weak_operator, f.account, Some(5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoreError::Forbidden(Permission::Operator)),
        "an operator token without ManageAccount: {err:?}"
    );
    let stranger = member(AccountId::from_bytes(random_id()), Role::SuperAdmin);
    let err = f
        .coffer
        .set_account_quota(&stranger, f.account, Some(5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoreError::NotFound(Resource::Account)),
        "a token of another account: {err:?}"
    );
    let err = f
        .coffer
        .set_account_quota(&f.operator, AccountId::from_bytes(random_id()), Some(5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CoreError::NotFound(Resource::Account)),
        "an unknown account: {err:?}"
    );
    let err = f
        .coffer
        .set_account_quota(&f.operator, f.account, Some(u64::MAX))
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::Invalid(_)), "{err:?}");
    assert_eq!(
        f.coffer
            .get_account(&f.operator, f.account)
            .await
            .unwrap()
            .secrets_quota,
        None,
        "no refused call changed the quota"
    );
}

#[tokio::test]
async fn shutdown_closes_storage() {
    let f = default_fixture().await;
    f.coffer.shutdown().await;
    let err = f
        .coffer
        .create_store(&f.operator, f.account, StoreName::parse("late").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::Unavailable(_)), "{err:?}");
    // Idempotent.
    f.coffer.shutdown().await;
}

/// Revoking made-up token ids, or real ones in the wrong account, and deleting made-up
/// accounts bar nothing: the set of bars grows only with tokens and accounts that exist.
#[tokio::test]
async fn only_existing_tokens_and_accounts_are_barred() {
    let f = default_fixture().await;
    let op = &f.operator;
    let other = f.coffer.create_account(op, "other").await.unwrap().id;
    let (in_other, _) = f
        .coffer
        .create_token(
            op,
            other,
            crate::NewToken {
                name: "first".into(),
                role: Role::SuperAdmin,
                expires: None,
            },
        )
        .await
        .unwrap();
    for _ in 0..200 {
        let made_up = TokenId::from_bytes(random_id());
        assert!(matches!(
            f.coffer.revoke_token(op, f.account, made_up).await,
            Err(CoreError::NotFound(Resource::Token))
        ));
        assert!(matches!(
            f.coffer
                .delete_account(op, AccountId::from_bytes(random_id()))
                .await,
            Err(CoreError::NotFound(Resource::Account))
        ));
    }
    // A real token asked for in an account it is not in.
    assert!(matches!(
        f.coffer.revoke_token(op, f.account, in_other.id).await,
        Err(CoreError::NotFound(Resource::Token))
    ));
    assert_eq!(f.coffer.token_cache.bars(), 0);
    // A real revocation and a real deletion bar what they act on, once.
    f.coffer.revoke_token(op, other, in_other.id).await.unwrap();
    assert!(matches!(
        f.coffer.revoke_token(op, other, in_other.id).await,
        Err(CoreError::AlreadyRevoked)
    ));
    assert_eq!(f.coffer.token_cache.bars(), 1);
    f.coffer.delete_account(op, other).await.unwrap();
    assert_eq!(f.coffer.token_cache.bars(), 2);
}

/// The audit entries of `account`, decoded.
async fn audit_payloads(coffer: &Coffer, account: AccountId) -> Vec<serde_json::Value> {
    coffer
        .storage()
        .audit_entries(account, 0, 1_000_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| serde_json::from_slice(&r.entry.payload).unwrap())
        .collect()
}

fn from(client: &str) -> crate::RequestContext {
    crate::RequestContext {
        request_id: "r".into(),
        client: Some(client.into()),
    }
}

/// A reporter token `target` of the fixture's account, and that token with a wrong secret (its
/// id is real, so a failure with it is counted for the account).
async fn token_with_a_wrong_secret(f: &Fixture) -> (coffer_storage::TokenRecord, String) {
    let (real, token) = f
        .coffer
        .create_token(
            &f.operator,
            f.account,
            crate::NewToken {
                name: "target".into(),
                role: Role::SecretsStoreReporter,
                expires: None,
            },
        )
        .await
        .unwrap();
    let wrong = format!(
        "{}{}",
        &token.expose_secret()[..token.expose_secret().len() - 43],
        "A".repeat(43)
    );
    (real, wrong)
}

/// IPv6 failures are counted per /64, as the failed-authentication limit counts them: many
/// addresses of one network make one entry an interval, not one each.
#[tokio::test]
async fn ipv6_failures_are_counted_per_slash_64() {
    let f = default_fixture().await;
    let (_, wrong) = token_with_a_wrong_secret(&f).await;
    for i in 1..=10 {
        let client = format!("2001:db8:1:2::{i:x}");
        assert!(f.coffer.authenticate(&wrong, from(&client)).await.is_err());
    }
    assert!(
        f.coffer
            .authenticate(&wrong, from("2001:db8:1:3::1"))
            .await
            .is_err()
    );
    f.coffer.flush_auth_failures().await.unwrap();
    let entries = audit_payloads(&f.coffer, f.account).await;
    let mut logins: Vec<(String, u64)> = entries
        .iter()
        .filter(|e| e["action"] == "login" && e["outcome"] == "denied")
        .map(|e| {
            (
                e["client"].as_str().unwrap().to_owned(),
                e["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    logins.sort();
    assert_eq!(
        logins,
        vec![
            ("2001:db8:1:2::/64".to_owned(), 10),
            ("2001:db8:1:3::/64".to_owned(), 1)
        ]
    );
}

/// Failed logins cost no audit write each: they are counted per token, address and reason, and
/// written at the flush as one entry per key with the number of attempts, in one transaction.
/// Budgets used up are counted per address in the instance's log. Past the capacity, failures
/// are counted per account as unrecorded.
#[tokio::test]
async fn failed_logins_are_aggregated_per_address_and_interval() {
    let f = default_fixture().await;
    let (real, wrong) = token_with_a_wrong_secret(&f).await;
    let head = f.coffer.storage().audit_head(f.account).await.unwrap();
    // Ten addresses, five failures each, and an unknown token id (no account: not recorded).
    for i in 0..10 {
        for _ in 0..5 {
            assert!(matches!(
                f.coffer
                    .authenticate(&wrong, from(&format!("192.0.2.{i}")))
                    .await,
                Err(CoreError::Unauthenticated(_))
            ));
        }
    }
    let unknown = format!(
        "coffer_{}_{}",
        TokenId::from_bytes(random_id()),
        "A".repeat(43)
    );
    assert!(
        f.coffer
            .authenticate(&unknown, from("192.0.2.1"))
            .await
            .is_err()
    );
    f.coffer.record_rate_limited("192.0.2.3", 20).await;
    f.coffer.record_rate_limited("192.0.2.3", 20).await;
    assert_eq!(
        f.coffer.storage().audit_head(f.account).await.unwrap(),
        head,
        "no failure was written on its own"
    );
    assert_eq!(f.coffer.flush_auth_failures().await.unwrap(), 11);
    assert_eq!(
        f.coffer.flush_auth_failures().await.unwrap(),
        0,
        "taken once"
    );
    let entries = audit_payloads(&f.coffer, f.account).await;
    let logins: Vec<_> = entries
        .iter()
        .filter(|e| e["action"] == "login" && e["outcome"] == "denied")
        .collect();
    assert_eq!(logins.len(), 10, "{logins:#?}");
    let mut clients: Vec<&str> = logins
        .iter()
        .map(|e| e["client"].as_str().unwrap())
        .collect();
    clients.sort();
    assert_eq!(
        clients,
        (0..10).map(|i| format!("192.0.2.{i}")).collect::<Vec<_>>()
    );
    for e in &logins {
        assert_eq!(e["attempts"], 5, "{e}");
        assert_eq!(e["actor"]["token_id"], real.id.to_string(), "{e}");
        assert_eq!(e["resource"]["token_id"], real.id.to_string(), "{e}");
        assert_eq!(e["reason"], "invalid API token", "{e}");
        // As times, not as text: RFC 3339 text with trimmed fractions does not sort.
        let at = |k: &str| Timestamp::parse_rfc3339(e[k].as_str().unwrap()).unwrap();
        assert!(at("first_attempt") <= at("last_attempt"), "{e}");
        assert!(!e.to_string().contains(&wrong[40..]), "no token in the log");
    }
    let limited: Vec<_> = entries
        .iter()
        .filter(|e| e["outcome"] == "rate_limited")
        .collect();
    assert_eq!(limited.len(), 1, "{limited:#?}");
    assert_eq!(limited[0]["client"], "192.0.2.3");
    assert_eq!(limited[0]["attempts"], 2);

    // Past the capacity: counted per account, one `unrecorded` entry.
    let capacity = super::failures::CAPACITY;
    for i in 0..capacity + 7 {
        let _ = f
            .coffer
            .authenticate(
                &wrong,
                from(&format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)),
            )
            .await;
    }
    assert_eq!(f.coffer.auth_failures.len(), capacity);
    assert_eq!(f.coffer.flush_auth_failures().await.unwrap(), capacity + 1);
    let entries = audit_payloads(&f.coffer, f.account).await;
    let unrecorded: Vec<_> = entries
        .iter()
        .filter(|e| e["outcome"] == "unrecorded")
        .collect();
    assert_eq!(unrecorded.len(), 1);
    assert_eq!(unrecorded[0]["attempts"], 7);
    assert!(
        f.coffer
            .verify_chain(f.account)
            .await
            .unwrap()
            .first_bad
            .is_none()
    );
}

/// Verification reads entries and checkpoints a page at a time: whatever the page size, the
/// result is the same, checkpoints on page boundaries included, and a bad checkpoint is found
/// where it is.
#[tokio::test]
async fn verification_pages_through_entries_and_checkpoints() {
    let f = default_fixture().await;
    for i in 0..23 {
        f.coffer
            .create_store(
                &f.operator,
                f.account,
                StoreName::parse(&format!("s{i}")).unwrap(),
            )
            .await
            .unwrap();
        if i % 3 == 0 {
            f.coffer.checkpoint_audit().await.unwrap();
        }
    }
    let whole = f.coffer.verify_chain_paged(f.account, 1_000).await.unwrap();
    assert!(whole.first_bad.is_none(), "{whole:?}");
    assert!(whole.checkpoints_checked >= 8, "{whole:?}");
    for page in [1, 2, 3, 5, 7] {
        assert_eq!(
            f.coffer.verify_chain_paged(f.account, page).await.unwrap(),
            whole,
            "page {page}"
        );
    }
    // A correctly signed checkpoint over a wrong hash, in the middle; and a forged one past the
    // end: the first is reported, whatever the page size.
    let (head, _) = whole.head.unwrap();
    let signed: Vec<u64> = f
        .coffer
        .storage()
        .audit_checkpoints(f.account, 0, 1_000)
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    let seq = (2..head - 2).rev().find(|s| !signed.contains(s)).unwrap();
    let hash = [7u8; 32];
    let mac = f
        .coffer
        .keys
        .audit_mac()
        .sign(&super::audit::checkpoint_message(f.account, seq, &hash))
        .to_vec();
    let at = Timestamp::now();
    let put = |seq, hash, mac| coffer_storage::AuditCheckpoint {
        account_id: f.account,
        seq,
        hash,
        mac,
        at,
    };
    f.coffer
        .storage()
        .put_audit_checkpoint(put(seq, hash, mac))
        .await
        .unwrap();
    f.coffer
        .storage()
        .put_audit_checkpoint(put(head + 5, [0; 32], vec![0; 32]))
        .await
        .unwrap();
    for page in [1, 2, 3, 1_000] {
        let v = f.coffer.verify_chain_paged(f.account, page).await.unwrap();
        let (at_seq, why) = v.first_bad.expect("a bad checkpoint");
        assert_eq!(at_seq, seq, "page {page}");
        assert!(why.contains("log rewritten"), "{why}");
    }
}

/// Two of the operator's requests racing to give a new account its first token: with the
/// writer held, both pass the look for tokens and queue their writes; the write's own check
/// lets one through, and the other is refused (audited as denied, nothing else written).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_racing_first_tokens_make_one() {
    let f = default_fixture().await;
    let other = f
        .coffer
        .create_account(&f.operator, "team-b")
        .await
        .unwrap()
        .id;
    let hold = f.sqlite.hold_writer().await.unwrap();
    let coffer = Arc::new(f.coffer);
    let mut tasks = tokio::task::JoinSet::new();
    for name in ["first", "second"] {
        let (coffer, who) = (Arc::clone(&coffer), f.operator.clone());
        tasks.spawn(async move {
            let new = crate::NewToken {
                name: name.into(),
                role: Role::SuperAdmin,
                expires: None,
            };
            coffer.create_token(&who, other, new).await
        });
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while f.sqlite.queued_writes() < 2 {
        assert!(std::time::Instant::now() < deadline, "both tokens queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    hold.release();
    let results = tasks.join_all().await;
    let made = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(CoreError::OperatorFirstTokenOnly)))
        .count();
    assert_eq!((made, refused), (1, 1), "{results:?}");
    assert_eq!(coffer.storage().list_tokens(other).await.unwrap().len(), 1);
    let tokens: Vec<String> = audit_payloads(&coffer, other)
        .await
        .into_iter()
        .filter(|e| e["action"] == "create" && e["resource"]["type"] == "token")
        .map(|e| e["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tokens, ["success", "denied"], "one made, one refused");
}

/// Concurrent updates of one secret are queued one behind the other without waiting for each
/// other's commit: with the writer held, all 16 queue, and one commit then applies them all,
/// each as its own version with its own change-log and audit entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_of_one_secret_share_one_commit_with_consecutive_versions() {
    const N: usize = 16;
    let f = default_fixture().await;
    let secret = f.create(&["hot"]).await.unwrap().remove(0);
    assert_eq!(secret.version, Version(1));
    let head = f.head().await;
    let audit_before = audit_payloads(&f.coffer, f.account).await.len();
    let before = f.sqlite.write_stats();

    let hold = f.sqlite.hold_writer().await.unwrap();
    let coffer = Arc::new(f.coffer);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let (coffer, who) = (Arc::clone(&coffer), f.operator.clone());
        let (account, store, id) = (f.account, f.store, secret.id);
        tasks.spawn(async move {
            let update = UpdateSecret {
                value: Some(Plaintext::new(format!("value-{i}").into_bytes())),
                ..UpdateSecret::default()
            };
            coffer.update_secret(&who, account, store, id, update).await
        });
    }
    // Every update reaches the writer's queue while the writer is held: none waits for
    // another's commit. (Before, each held the secret's lock until its commit.)
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while f.sqlite.queued_writes() < N {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {N} updates were queued",
            f.sqlite.queued_writes()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    hold.release();
    let mut versions = Vec::new();
    while let Some(done) = tasks.join_next().await {
        versions.push(done.unwrap().unwrap().version.0);
    }
    versions.sort_unstable();
    assert_eq!(versions, (2..=1 + N as u32).collect::<Vec<_>>());

    // The hold's transaction, then one for all the updates.
    let after = f.sqlite.write_stats();
    assert_eq!(after.jobs - before.jobs, N as u64 + 1);
    assert_eq!(after.commits - before.commits, 2);

    // Each update has its change-log entry, in version order, and its audit entry.
    let changes = coffer.storage().changes_after(head, 10_000).await.unwrap();
    let put_versions: Vec<u32> = changes
        .iter()
        .filter_map(|c| match c.change().unwrap() {
            Change::SecretPut {
                secret_id, version, ..
            } if secret_id == secret.id => Some(version),
            _ => None,
        })
        .collect();
    assert_eq!(put_versions, (2..=1 + N as u32).collect::<Vec<_>>());
    let audit = audit_payloads(&coffer, f.account).await;
    let updates = audit[audit_before..]
        .iter()
        .filter(|e| e["action"] == "update")
        .count();
    assert_eq!(updates, N, "{audit:#?}");
    // And the current value is the last one queued (versions follow the queue's order).
    let current = coffer
        .get_secret(&f.operator, f.account, f.store, secret.id)
        .await
        .unwrap();
    assert_eq!(current.version, Version(1 + N as u32));
}
