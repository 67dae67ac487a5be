//! Builders and assertions shared by the checks.

use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::digest;
use coffer_types::{
    AccountId, DekId, Scope, Scopes, SecretId, SecretName, StoreId, StoreName, Timestamp, TokenId,
    Version,
};

use crate::{
    AccountRecord, ChangeRecord, DekRecord, Direction, NewSecret, SecretOrder, SecretQuery,
    SecretRecord, Storage, StoreOrder, StoreQuery, StoreRecord, VersionRecord, WrappedKeyRecord,
};

/// 16 fresh bytes. Ids are unique within the process and scattered (not increasing), so that
/// checks of the id tie-break do not pass by accident of insertion order.
pub(super) fn id_bytes() -> [u8; 16] {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let (a, b) = (mix(n), mix(n ^ 0x5555_5555_5555_5555));
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&a.to_be_bytes());
    out[8..].copy_from_slice(&b.to_be_bytes());
    out
}

/// The splitmix64 finaliser: a bijection on u64, so distinct inputs give distinct outputs.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A fixed instant plus `n` microseconds, so checks control ordering and ties exactly.
pub(super) fn ts(n: i64) -> Timestamp {
    Timestamp::from_unix_micros(1_700_000_000_000_000 + n)
}

pub(super) fn wrapped_key(tag: u8) -> WrappedKeyRecord {
    WrappedKeyRecord {
        id: DekId::from_bytes(id_bytes()),
        kek_id: format!("kek-{tag}"),
        wrapped: vec![tag; 40],
        created: ts(i64::from(tag)),
    }
}

pub(super) fn account_record(name: &str) -> AccountRecord {
    AccountRecord {
        id: AccountId::from_bytes(id_bytes()),
        name: name.to_owned(),
        created: ts(0),
        secrets_quota: None,
    }
}

/// An account with one DEK: what every secret needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tenant {
    pub account: AccountId,
    pub dek: DekId,
}

pub(super) async fn tenant(s: &dyn Storage, name: &str) -> Tenant {
    let account = account_record(name);
    s.create_account(account.clone(), &[])
        .await
        .expect("fixture: create_account");
    let key = wrapped_key(1);
    let dek = key.id;
    s.put_dek(DekRecord {
        account_id: account.id,
        key,
        rk: None,
    })
    .await
    .expect("fixture: put_dek");
    Tenant {
        account: account.id,
        dek,
    }
}

pub(super) fn store_record(account: AccountId, name: &str) -> StoreRecord {
    StoreRecord {
        id: StoreId::from_bytes(id_bytes()),
        account_id: account,
        name: StoreName::parse(name).expect("fixture: store name"),
        created: ts(10),
        modified: ts(10),
    }
}

pub(super) async fn store(s: &dyn Storage, t: Tenant, name: &str) -> StoreId {
    let record = store_record(t.account, name);
    let id = record.id;
    s.create_store(record, 1000, &[])
        .await
        .expect("fixture: create_store");
    id
}

/// A new secret named `name` with scopes {workers}, version 1 sealed under the tenant's DEK.
pub(super) fn secret(t: Tenant, store: StoreId, name: &str) -> NewSecret {
    let id = SecretId::from_bytes(id_bytes());
    NewSecret {
        record: SecretRecord {
            id,
            store_id: store,
            account_id: t.account,
            name: SecretName::parse(name).expect("fixture: secret name"),
            comment: String::new(),
            scopes: Scopes::new([Scope::Workers]),
            created: ts(20),
            modified: ts(20),
            version: Version::FIRST,
        },
        value: VersionRecord {
            secret_id: id,
            version: Version::FIRST,
            dek_id: t.dek,
            sealed: format!("sealed:{name}:1").into_bytes(),
            created: ts(20),
        },
        dek: None,
    }
}

/// Creates one secret (quota 1000) and returns its record.
pub(super) async fn create_secret(
    s: &dyn Storage,
    t: Tenant,
    store: StoreId,
    name: &str,
) -> NewSecret {
    let new = secret(t, store, name);
    s.create_secrets(t.account, store, vec![new.clone()], 1000, &[])
        .await
        .expect("fixture: create_secrets");
    new
}

pub(super) fn token_record(account: AccountId) -> crate::TokenRecord {
    crate::TokenRecord {
        id: TokenId::from_bytes(id_bytes()),
        account_id: account,
        name: "ci".to_owned(),
        hash: [7; 32],
        role: "super_admin".to_owned(),
        operator: false,
        created: ts(5),
        expires: Some(ts(500)),
        revoked: None,
        last_used: Some(ts(6)),
    }
}

pub(super) fn store_query(
    page: u32,
    per_page: u32,
    order: StoreOrder,
    direction: Direction,
) -> StoreQuery {
    StoreQuery {
        page,
        per_page,
        order,
        direction,
    }
}

pub(super) fn secret_query(page: u32, per_page: u32) -> SecretQuery {
    SecretQuery {
        page,
        per_page,
        order: SecretOrder::default(),
        direction: Direction::default(),
        search: None,
        scopes: Scopes::default(),
    }
}

/// Every entry of the log (the suite never writes more than this many).
pub(super) async fn all_changes(s: &dyn Storage) -> Vec<ChangeRecord> {
    s.changes_after(0, 1_000_000)
        .await
        .expect("changes_after(0)")
}

/// Asserts that `log` is the whole log: seq 1, 2, 3, ... and each hash recomputed here,
/// independently of the backend's code, from the documented formula.
pub(super) fn assert_chain(log: &[ChangeRecord]) {
    assert_chain_from(0, [0u8; 32], log);
}

/// The entries retained after the log's base (compaction drops those at or below it), with
/// the base's seq and hash.
pub(super) async fn retained_changes(s: &dyn Storage) -> (u64, [u8; 32], Vec<ChangeRecord>) {
    let state = s.log_state().await.expect("log_state");
    let log = s
        .changes_after(state.base_seq, 1_000_000)
        .await
        .expect("changes_after(base)");
    (state.base_seq, state.base_hash, log)
}

/// [`assert_chain`] for a log whose base is at `base` with hash `base_hash`.
pub(super) fn assert_chain_from(base: u64, base_hash: [u8; 32], log: &[ChangeRecord]) {
    let mut prev = base_hash;
    for (i, record) in log.iter().enumerate() {
        assert_eq!(
            record.seq,
            base + i as u64 + 1,
            "change log seqs must follow the base without gaps"
        );
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&prev);
        ctx.update(&record.seq.to_be_bytes());
        ctx.update(&record.payload);
        assert_eq!(
            ctx.finish().as_ref(),
            record.hash.as_slice(),
            "hash of change {} must be SHA-256(prev hash || seq BE || payload)",
            record.seq
        );
        prev = record.hash;
    }
    for pair in log.windows(2) {
        assert!(
            pair[0].at <= pair[1].at,
            "change timestamps must not go backwards"
        );
    }
}

/// The head must not have moved: the operation that just failed left no trace in the log.
pub(super) async fn assert_head(s: &dyn Storage, expected: u64, after: &str) {
    assert_eq!(
        s.change_head().await.expect("change_head"),
        expected,
        "a failed operation ({after}) must append nothing to the change log"
    );
}
