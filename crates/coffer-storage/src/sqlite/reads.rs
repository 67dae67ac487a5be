//! Queries. Each takes a plain connection, so the writer can run them inside its transaction
//! and readers inside theirs.

use std::fmt::Write as _;

use coffer_types::{
    AccountId, BindingName, DekId, SecretId, SecretName, ServiceId, ServiceName, StoreId,
    StoreName, TokenId, Version,
};
use rusqlite::types::Value;
use rusqlite::{Connection, Params, Row, params, params_from_iter};

use super::codec::{
    DbResultExt, bool_col, col, contains_pattern, direction_sql, id_col, offset, opt_ts_col,
    opt_u64_col, query_all, query_opt, scope_col, scope_needle, scopes_col, ts_col, u64_col,
    version_col,
};
use super::log_head::{base_position, log_head};
use crate::{
    AccountRecord, ChangeRecord, DekRecord, Direction, Entity, FeedSignature, Page, PageWindow,
    Result, RkWrap, SecretBindingRecord, SecretOrder, SecretQuery, SecretRecord, ServiceQuery,
    ServiceRecord, ServiceTokenRecord, StorageError, StoreBindingRecord, StoreOrder, StoreQuery,
    StoreRecord, TokenRecord, VersionRecord, WrappedKeyRecord,
};

// Column lists shared by the queries and the decoders below; a decoder reads columns by
// position, so each list and its decoder change together.
macro_rules! account_cols {
    () => {
        "id, name, created, secrets_quota"
    };
}
macro_rules! token_cols {
    () => {
        "id, account_id, name, hash, role, operator, created, expires, revoked, last_used"
    };
}
macro_rules! dek_cols {
    () => {
        "id, account_id, kek_id, wrapped, created, rk_version, rk_wrapped, rk_account"
    };
}
macro_rules! store_cols {
    () => {
        "id, account_id, name, created, modified"
    };
}
macro_rules! secret_cols {
    () => {
        "id, store_id, account_id, name, comment, scopes, created, modified, version"
    };
}
macro_rules! version_cols {
    () => {
        "secret_id, version, dek_id, sealed, created"
    };
}
macro_rules! service_cols {
    () => {
        "id, account_id, name, kind, created, modified"
    };
}
macro_rules! service_token_cols {
    () => {
        "id, account_id, service_id, hash, created, revoked"
    };
}
pub(super) use {secret_cols, service_token_cols};

/// A single integer (`count(*)`, an EXISTS test).
fn query_i64(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    context: &'static str,
) -> Result<i64> {
    query_opt(conn, sql, params, context, |row| col(row, 0, context))?
        .ok_or_else(|| StorageError::Unavailable(format!("{context}: no row")))
}

fn account_from_row(row: &Row<'_>) -> Result<AccountRecord> {
    Ok(AccountRecord {
        id: AccountId::from_bytes(id_col(row, 0, "accounts.id")?),
        name: col(row, 1, "accounts.name")?,
        created: ts_col(row, 2, "accounts.created")?,
        secrets_quota: opt_u64_col(row, 3, "accounts.secrets_quota")?,
    })
}

fn token_from_row(row: &Row<'_>) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: TokenId::from_bytes(id_col(row, 0, "tokens.id")?),
        account_id: AccountId::from_bytes(id_col(row, 1, "tokens.account_id")?),
        name: col(row, 2, "tokens.name")?,
        hash: col(row, 3, "tokens.hash")?,
        role: col(row, 4, "tokens.role")?,
        operator: bool_col(row, 5, "tokens.operator")?,
        created: ts_col(row, 6, "tokens.created")?,
        expires: opt_ts_col(row, 7, "tokens.expires")?,
        revoked: opt_ts_col(row, 8, "tokens.revoked")?,
        last_used: opt_ts_col(row, 9, "tokens.last_used")?,
    })
}

fn dek_from_row(row: &Row<'_>) -> Result<DekRecord> {
    let ark: bool = col(row, 7, "deks.rk_account")?;
    Ok(DekRecord {
        account_id: AccountId::from_bytes(id_col(row, 1, "deks.account_id")?),
        key: WrappedKeyRecord {
            id: DekId::from_bytes(id_col(row, 0, "deks.id")?),
            kek_id: col(row, 2, "deks.kek_id")?,
            wrapped: col(row, 3, "deks.wrapped")?,
            created: ts_col(row, 4, "deks.created")?,
        },
        rk: rk_wrap_cols(row, 5, "deks.rk_version")?.map(|rk| RkWrap { ark, ..rk }),
    })
}

/// An RK version and wrap in columns `idx` and `idx + 1` (both NULL: none).
pub(super) fn rk_wrap_cols(
    row: &Row<'_>,
    idx: usize,
    what: &'static str,
) -> Result<Option<RkWrap>> {
    let version: Option<i64> = col(row, idx, what)?;
    let wrapped: Option<Vec<u8>> = col(row, idx + 1, what)?;
    match (version, wrapped) {
        (None, None) => Ok(None),
        (Some(v), Some(wrapped)) => Ok(Some(RkWrap {
            version: u32::try_from(v)
                .map_err(|_| StorageError::Corrupted(format!("{what}: {v} out of range")))?,
            wrapped,
            ark: false,
        })),
        _ => Err(StorageError::Corrupted(format!(
            "{what}: version and wrap are not both set"
        ))),
    }
}

pub(super) fn list_deks(conn: &Connection) -> Result<Vec<DekRecord>> {
    query_all(
        conn,
        concat!("SELECT ", dek_cols!(), " FROM deks ORDER BY id"),
        [],
        "list deks",
        dek_from_row,
    )
}

fn store_from_row(row: &Row<'_>) -> Result<StoreRecord> {
    let name: String = col(row, 2, "stores.name")?;
    Ok(StoreRecord {
        id: StoreId::from_bytes(id_col(row, 0, "stores.id")?),
        account_id: AccountId::from_bytes(id_col(row, 1, "stores.account_id")?),
        name: StoreName::parse(&name)
            .map_err(|_| StorageError::Corrupted("stores.name: invalid name".into()))?,
        created: ts_col(row, 3, "stores.created")?,
        modified: ts_col(row, 4, "stores.modified")?,
    })
}

pub(super) fn secret_from_row(row: &Row<'_>) -> Result<SecretRecord> {
    let name: String = col(row, 3, "secrets.name")?;
    Ok(SecretRecord {
        id: SecretId::from_bytes(id_col(row, 0, "secrets.id")?),
        store_id: StoreId::from_bytes(id_col(row, 1, "secrets.store_id")?),
        account_id: AccountId::from_bytes(id_col(row, 2, "secrets.account_id")?),
        name: SecretName::parse(&name)
            .map_err(|_| StorageError::Corrupted("secrets.name: invalid name".into()))?,
        comment: col(row, 4, "secrets.comment")?,
        scopes: scopes_col(row, 5, "secrets.scopes")?,
        created: ts_col(row, 6, "secrets.created")?,
        modified: ts_col(row, 7, "secrets.modified")?,
        version: version_col(row, 8, "secrets.version")?,
    })
}

fn version_from_row(row: &Row<'_>) -> Result<VersionRecord> {
    Ok(VersionRecord {
        secret_id: SecretId::from_bytes(id_col(row, 0, "versions.secret_id")?),
        version: version_col(row, 1, "versions.version")?,
        dek_id: DekId::from_bytes(id_col(row, 2, "versions.dek_id")?),
        sealed: col(row, 3, "versions.sealed")?,
        created: ts_col(row, 4, "versions.created")?,
    })
}

/// A service row without its bindings (see [`load_bindings`]).
fn service_from_row(row: &Row<'_>) -> Result<ServiceRecord> {
    let name: String = col(row, 2, "services.name")?;
    Ok(ServiceRecord {
        id: ServiceId::from_bytes(id_col(row, 0, "services.id")?),
        account_id: AccountId::from_bytes(id_col(row, 1, "services.account_id")?),
        name: ServiceName::parse(&name)
            .map_err(|_| StorageError::Corrupted("services.name: invalid name".into()))?,
        kind: scope_col(row, 3, "services.kind")?,
        secrets: Vec::new(),
        stores: Vec::new(),
        created: ts_col(row, 4, "services.created")?,
        modified: ts_col(row, 5, "services.modified")?,
    })
}

pub(super) fn service_token_from_row(row: &Row<'_>) -> Result<ServiceTokenRecord> {
    Ok(ServiceTokenRecord {
        id: TokenId::from_bytes(id_col(row, 0, "service_tokens.id")?),
        account_id: AccountId::from_bytes(id_col(row, 1, "service_tokens.account_id")?),
        service_id: ServiceId::from_bytes(id_col(row, 2, "service_tokens.service_id")?),
        hash: col(row, 3, "service_tokens.hash")?,
        created: ts_col(row, 4, "service_tokens.created")?,
        revoked: opt_ts_col(row, 5, "service_tokens.revoked")?,
    })
}

fn change_from_row(row: &Row<'_>) -> Result<ChangeRecord> {
    let seq: i64 = col(row, 0, "changes.seq")?;
    Ok(ChangeRecord {
        seq: u64::try_from(seq)
            .map_err(|_| StorageError::Corrupted("changes.seq: negative".into()))?,
        at: ts_col(row, 1, "changes.at")?,
        hash: col(row, 2, "changes.hash")?,
        payload: col(row, 3, "changes.payload")?,
    })
}

pub(super) fn get_instance_key(
    conn: &Connection,
    purpose: &str,
) -> Result<Option<WrappedKeyRecord>> {
    query_opt(
        conn,
        "SELECT key_id, kek_id, wrapped, created FROM instance_keys WHERE purpose = ?1",
        [purpose],
        "get instance key",
        |row| {
            Ok(WrappedKeyRecord {
                id: DekId::from_bytes(id_col(row, 0, "instance_keys.key_id")?),
                kek_id: col(row, 1, "instance_keys.kek_id")?,
                wrapped: col(row, 2, "instance_keys.wrapped")?,
                created: ts_col(row, 3, "instance_keys.created")?,
            })
        },
    )
}

pub(super) fn get_account(conn: &Connection, id: AccountId) -> Result<Option<AccountRecord>> {
    query_opt(
        conn,
        concat!("SELECT ", account_cols!(), " FROM accounts WHERE id = ?1"),
        [id.as_bytes()],
        "get account",
        account_from_row,
    )
}

pub(super) fn list_accounts(conn: &Connection) -> Result<Vec<AccountRecord>> {
    query_all(
        conn,
        concat!(
            "SELECT ",
            account_cols!(),
            " FROM accounts ORDER BY created, id"
        ),
        [],
        "list accounts",
        account_from_row,
    )
}

pub(super) fn get_token(conn: &Connection, id: TokenId) -> Result<Option<TokenRecord>> {
    query_opt(
        conn,
        concat!("SELECT ", token_cols!(), " FROM tokens WHERE id = ?1"),
        [id.as_bytes()],
        "get token",
        token_from_row,
    )
}

pub(super) fn list_tokens(conn: &Connection, account: AccountId) -> Result<Vec<TokenRecord>> {
    query_all(
        conn,
        concat!(
            "SELECT ",
            token_cols!(),
            " FROM tokens WHERE account_id = ?1 ORDER BY created, id"
        ),
        [account.as_bytes()],
        "list tokens",
        token_from_row,
    )
}

pub(super) fn get_dek(conn: &Connection, id: DekId) -> Result<Option<DekRecord>> {
    query_opt(
        conn,
        concat!("SELECT ", dek_cols!(), " FROM deks WHERE id = ?1"),
        [id.as_bytes()],
        "get dek",
        dek_from_row,
    )
}

pub(super) fn latest_dek(conn: &Connection, account: AccountId) -> Result<Option<DekRecord>> {
    query_opt(
        conn,
        concat!(
            "SELECT ",
            dek_cols!(),
            " FROM deks WHERE account_id = ?1 AND retired = 0
              ORDER BY created DESC, rowid DESC LIMIT 1"
        ),
        [account.as_bytes()],
        "latest dek",
        dek_from_row,
    )
}

/// Whether `id` is a DEK of `account` (a secret may only be sealed under its account's keys).
pub(super) fn dek_belongs_to(conn: &Connection, id: DekId, account: AccountId) -> Result<bool> {
    let found = query_opt(
        conn,
        "SELECT 1 FROM deks WHERE id = ?1 AND account_id = ?2",
        [id.as_bytes(), account.as_bytes()],
        "check dek",
        |_| Ok(()),
    )?;
    Ok(found.is_some())
}

pub(super) fn get_store(
    conn: &Connection,
    account: AccountId,
    id: StoreId,
) -> Result<Option<StoreRecord>> {
    query_opt(
        conn,
        concat!(
            "SELECT ",
            store_cols!(),
            " FROM stores WHERE id = ?1 AND account_id = ?2"
        ),
        [id.as_bytes(), account.as_bytes()],
        "get store",
        store_from_row,
    )
}

/// `NotFound(Store)` unless `id` is a store of `account`: another account's store is
/// indistinguishable from a missing one.
/// `NotFound(Account)` unless `account` exists.
pub(super) fn require_account(conn: &Connection, account: AccountId) -> Result<()> {
    let found = query_opt(
        conn,
        "SELECT 1 FROM accounts WHERE id = ?1",
        [account.as_bytes()],
        "check account",
        |_| Ok(()),
    )?;
    found.ok_or(StorageError::NotFound(Entity::Account))
}

pub(super) fn require_store(conn: &Connection, account: AccountId, id: StoreId) -> Result<()> {
    let found = query_opt(
        conn,
        "SELECT 1 FROM stores WHERE id = ?1 AND account_id = ?2",
        [id.as_bytes(), account.as_bytes()],
        "check store",
        |_| Ok(()),
    )?;
    found.ok_or(StorageError::NotFound(Entity::Store))
}

/// Run inside one read transaction by the caller, so the count and the page agree.
pub(super) fn list_stores(
    conn: &Connection,
    account: AccountId,
    query: &StoreQuery,
) -> Result<Page<StoreRecord>> {
    let column = match query.order {
        StoreOrder::Name => "name",
        StoreOrder::Created => "created",
        StoreOrder::Modified => "modified",
    };
    let dir = direction_sql(query.direction);
    // Only fixed identifiers are spliced in; every value is a bound parameter.
    let sql = format!(
        concat!(
            "SELECT ",
            store_cols!(),
            " FROM stores WHERE account_id = ?1 ORDER BY {column} {dir}, id {dir} LIMIT ?2 OFFSET ?3"
        ),
        column = column,
        dir = dir
    );
    let items = query_all(
        conn,
        &sql,
        params![
            account.as_bytes(),
            i64::from(query.per_page),
            offset(query.page, query.per_page)
        ],
        "list stores",
        store_from_row,
    )?;
    let total = query_i64(
        conn,
        "SELECT count(*) FROM stores WHERE account_id = ?1",
        [account.as_bytes()],
        "count stores",
    )?;
    Ok(Page {
        items,
        total_count: u64::try_from(total).unwrap_or(0),
    })
}

pub(super) fn get_secret(
    conn: &Connection,
    account: AccountId,
    store: StoreId,
    id: SecretId,
) -> Result<Option<SecretRecord>> {
    query_opt(
        conn,
        concat!(
            "SELECT ",
            secret_cols!(),
            " FROM secrets WHERE id = ?1 AND store_id = ?2 AND account_id = ?3"
        ),
        [id.as_bytes(), store.as_bytes(), account.as_bytes()],
        "get secret",
        secret_from_row,
    )
}

/// Run inside one read transaction by the caller, so the store check, the count and the page
/// agree.
///
/// Flat in the store's size where page numbers allow (docs/benchmarks.md, "Lists"): the
/// unfiltered count is the store's `secret_count` (kept by triggers), not a count of its rows;
/// the page's rows are chosen by a walk of the order's index that reads only the index (no
/// `account_id` filter: a secret's account is its store's, by the foreign key, and the store
/// check has established the account), and only the page's rows are read whole. Skipping to a
/// deep page still walks the index entries before it. A filtered list (`search`, `scopes`)
/// reads the rows it tests and counts its matches.
pub(super) fn list_secrets(
    conn: &Connection,
    account: AccountId,
    store: StoreId,
    query: &SecretQuery,
) -> Result<Page<SecretRecord>> {
    query.check()?;
    let stored = query_opt(
        conn,
        "SELECT secret_count FROM stores WHERE id = ?1 AND account_id = ?2",
        [store.as_bytes(), account.as_bytes()],
        "check store",
        |row| u64_col(row, 0, "stores.secret_count"),
    )?
    .ok_or(StorageError::NotFound(Entity::Store))?;
    let mut filter = String::from("store_id = ?1");
    let mut values: Vec<Value> = vec![Value::Blob(store.as_bytes().to_vec())];
    if let Some(search) = &query.search {
        values.push(Value::Text(contains_pattern(search)));
        let n = values.len();
        // LIKE folds ASCII case only; names are ASCII, comments match other letters exactly.
        // Writing to a String cannot fail.
        let _ = write!(
            filter,
            " AND (name LIKE ?{n} ESCAPE '\\' OR comment LIKE ?{n} ESCAPE '\\')"
        );
    }
    for scope in query.scopes.iter() {
        values.push(Value::Text(scope_needle(scope)));
        let n = values.len();
        let _ = write!(filter, " AND instr(scopes, ?{n}) > 0");
    }
    let total = if query.is_unfiltered() {
        stored
    } else {
        let counted = query_i64(
            conn,
            &format!("SELECT count(*) FROM secrets WHERE {filter}"),
            params_from_iter(values.iter()),
            "count secrets",
        )?;
        u64::try_from(counted).unwrap_or(0)
    };

    let Some(window) = PageWindow::new(query.page, query.per_page, total) else {
        return Ok(Page {
            items: Vec::new(),
            total_count: total,
        });
    };
    values.push(Value::Integer(
        i64::try_from(window.limit).unwrap_or(i64::MAX),
    ));
    values.push(Value::Integer(
        i64::try_from(window.skip).unwrap_or(i64::MAX),
    ));
    let (limit, skip) = (values.len() - 1, values.len());
    // A deferred join: the subquery picks the page's rowids off the order's index (every
    // index entry carries its rowid), from the nearer end of the order; the outer query reads
    // those rows only, in the order asked.
    let sql = format!(
        concat!(
            "SELECT ",
            secret_cols!(),
            " FROM secrets WHERE rowid IN (SELECT rowid FROM secrets WHERE {filter}",
            " ORDER BY {read} LIMIT ?{limit} OFFSET ?{skip}) ORDER BY {order}"
        ),
        filter = filter,
        read = secret_order(query.order, window.read_direction(query.direction)),
        order = secret_order(query.order, query.direction),
        limit = limit,
        skip = skip
    );
    let items = query_all(
        conn,
        &sql,
        params_from_iter(values.iter()),
        "list secrets",
        secret_from_row,
    )?;
    Ok(Page {
        items,
        total_count: total,
    })
}

/// The ORDER BY of a secrets list. Each is served by an index on (store_id, column, id), or
/// (store_id, name) for names, which are unique in a store and so need no tie-break. Every
/// stored secret is active, so ordering by status is ordering by the tie-break alone.
fn secret_order(order: SecretOrder, direction: Direction) -> String {
    let dir = direction_sql(direction);
    match order {
        SecretOrder::Name => format!("name {dir}"),
        SecretOrder::Comment => format!("comment {dir}, id {dir}"),
        SecretOrder::Created => format!("created {dir}, id {dir}"),
        SecretOrder::Modified => format!("modified {dir}, id {dir}"),
        SecretOrder::Status => format!("id {dir}"),
    }
}

pub(super) fn get_version(
    conn: &Connection,
    secret: SecretId,
    version: Version,
) -> Result<Option<VersionRecord>> {
    query_opt(
        conn,
        concat!(
            "SELECT ",
            version_cols!(),
            " FROM versions WHERE secret_id = ?1 AND version = ?2"
        ),
        params![secret.as_bytes(), i64::from(version.0)],
        "get version",
        version_from_row,
    )
}

/// The account's secret count (0 for an unknown account), kept by triggers.
pub(super) fn secret_count(conn: &Connection, account: AccountId) -> Result<u64> {
    let count = query_opt(
        conn,
        "SELECT secret_count FROM accounts WHERE id = ?1",
        [account.as_bytes()],
        "secret count",
        |row| u64_col(row, 0, "accounts.secret_count"),
    )?;
    Ok(count.unwrap_or(0))
}

/// Run inside one read transaction by the caller, so the entries and the base agree.
pub(super) fn change_head(conn: &Connection) -> Result<u64> {
    Ok(log_head(conn)?.seq)
}

/// Entries after `after`, checked against the hash chain before they are handed out: the
/// entry at `after` (or the log's base, when `after` is the base) is the anchor the first
/// returned entry must chain onto, and every entry must follow its predecessor with no gap.
/// Run inside one read transaction by the caller, so the entries and the base agree.
/// See `Storage::feed_after`.
pub(super) fn feed_after(
    conn: &Connection,
    after: u64,
    limit: usize,
) -> Result<(Vec<ChangeRecord>, Vec<FeedSignature>)> {
    let mut entries = changes_after(conn, after, limit)?;
    let Some(last) = entries.last().map(|e| e.seq) else {
        return Ok((entries, Vec::new()));
    };
    let seq_sql = |seq: u64| {
        i64::try_from(seq).map_err(|_| StorageError::Corrupted("a seq beyond range".into()))
    };
    let next_signed: Option<i64> = query_opt(
        conn,
        "SELECT seq FROM change_signatures WHERE seq >= ?1 ORDER BY seq LIMIT 1",
        [seq_sql(last)?],
        "find next signature",
        |row| col(row, 0, "change_signatures.seq"),
    )?;
    if let Some(next) = next_signed.and_then(|n| u64::try_from(n).ok())
        && next > last
    {
        let more = usize::try_from(next - last).unwrap_or(usize::MAX);
        entries.extend(changes_after(conn, last, more)?);
    }
    let (first, last) = match (entries.first(), entries.last()) {
        (Some(f), Some(l)) => (f.seq, l.seq),
        _ => return Ok((entries, Vec::new())),
    };
    let signatures = query_all(
        conn,
        "SELECT seq, signature FROM change_signatures WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq",
        params![seq_sql(first)?, seq_sql(last)?],
        "read signatures",
        |row| {
            Ok(FeedSignature {
                seq: u64_col(row, 0, "change_signatures.seq")?,
                signature: col(row, 1, "change_signatures.signature")?,
            })
        },
    )?;
    Ok((entries, signatures))
}

pub(super) fn changes_after(
    conn: &Connection,
    after: u64,
    limit: usize,
) -> Result<Vec<ChangeRecord>> {
    let (base, base_hash) = base_position(conn)?;
    if after < base {
        return Err(StorageError::Compacted { base });
    }
    if limit == 0 {
        return Ok(Vec::new());
    }
    let Ok(after_sql) = i64::try_from(after) else {
        return Ok(Vec::new());
    };
    if after == base {
        // The anchor is the base, which `changes` no longer holds (for base 0: the genesis).
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = query_all(
            conn,
            "SELECT seq, at, hash, payload FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            params![after_sql, fetch],
            "read changes",
            change_from_row,
        )?;
        return check_chain(rows, after, base_hash);
    }
    // One extra row for the anchor.
    let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
    let mut rows = query_all(
        conn,
        "SELECT seq, at, hash, payload FROM changes WHERE seq >= ?1 ORDER BY seq LIMIT ?2",
        params![after_sql, fetch],
        "read changes",
        change_from_row,
    )?;
    // `after` is above the base, so its entry is the anchor.
    let prev = match rows.first() {
        None => return Ok(Vec::new()),
        Some(anchor) if anchor.seq == after => anchor.hash,
        Some(_) => {
            // Entries exist beyond `after` but `after` itself is missing: a gap.
            return Err(StorageError::Corrupted(format!(
                "change {after} is missing"
            )));
        }
    };
    rows.remove(0);
    rows.truncate(limit);
    check_chain(rows, after, prev)
}

/// `rows`, once checked to be the entries right after `after`, chaining onto `prev`.
fn check_chain(rows: Vec<ChangeRecord>, after: u64, prev: [u8; 32]) -> Result<Vec<ChangeRecord>> {
    ChangeRecord::check_chain(&rows, after, prev)?;
    Ok(rows)
}

/// Fills in `service`'s bindings: one range read of `service_bindings` in position order,
/// which is the secret bindings in their order, then the store bindings in theirs.
fn load_bindings(conn: &Connection, mut service: ServiceRecord) -> Result<ServiceRecord> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT binding, store_id, secret_name FROM service_bindings
             WHERE service_id = ?1 ORDER BY position",
        )
        .db("read bindings")?;
    let mut rows = stmt.query([service.id.as_bytes()]).db("read bindings")?;
    while let Some(row) = rows.next().db("read bindings")? {
        let binding: String = col(row, 0, "service_bindings.binding")?;
        let binding = BindingName::parse(&binding).map_err(|_| {
            StorageError::Corrupted("service_bindings.binding: invalid name".into())
        })?;
        let store_id = StoreId::from_bytes(id_col(row, 1, "service_bindings.store_id")?);
        match col::<Option<String>>(row, 2, "service_bindings.secret_name")? {
            Some(name) => service.secrets.push(SecretBindingRecord {
                binding,
                store_id,
                secret_name: SecretName::parse(&name).map_err(|_| {
                    StorageError::Corrupted("service_bindings.secret_name: invalid name".into())
                })?,
            }),
            None => service
                .stores
                .push(StoreBindingRecord { binding, store_id }),
        }
    }
    Ok(service)
}

/// Run inside one read transaction by the caller (or the writer's), so the service row and
/// its bindings agree.
pub(super) fn get_service(
    conn: &Connection,
    account: AccountId,
    id: ServiceId,
) -> Result<Option<ServiceRecord>> {
    query_opt(
        conn,
        concat!(
            "SELECT ",
            service_cols!(),
            " FROM services WHERE id = ?1 AND account_id = ?2"
        ),
        [id.as_bytes(), account.as_bytes()],
        "get service",
        service_from_row,
    )?
    .map(|service| load_bindings(conn, service))
    .transpose()
}

/// Like [`get_service`], by name.
pub(super) fn get_service_by_name(
    conn: &Connection,
    account: AccountId,
    name: &ServiceName,
) -> Result<Option<ServiceRecord>> {
    query_opt(
        conn,
        concat!(
            "SELECT ",
            service_cols!(),
            " FROM services WHERE account_id = ?1 AND name = ?2"
        ),
        params![account.as_bytes(), name.as_str()],
        "get service by name",
        service_from_row,
    )?
    .map(|service| load_bindings(conn, service))
    .transpose()
}

/// `NotFound(Service)` unless `id` is a service of `account`.
pub(super) fn require_service(conn: &Connection, account: AccountId, id: ServiceId) -> Result<()> {
    let found = query_opt(
        conn,
        "SELECT 1 FROM services WHERE id = ?1 AND account_id = ?2",
        [id.as_bytes(), account.as_bytes()],
        "check service",
        |_| Ok(()),
    )?;
    found.ok_or(StorageError::NotFound(Entity::Service))
}

/// Run inside one read transaction by the caller, so the count, the page and the bindings
/// agree. Names are unique per account, so ordering by name needs no tie-break.
pub(super) fn list_services(
    conn: &Connection,
    account: AccountId,
    query: &ServiceQuery,
) -> Result<Page<ServiceRecord>> {
    let (limit, skip) = (
        i64::from(query.per_page),
        offset(query.page, query.per_page),
    );
    // `name` is bound as NULL for "any name"; the two statements stay fixed (and cached).
    let name = query.name.as_ref().map(ServiceName::as_str);
    let services = query_all(
        conn,
        concat!(
            "SELECT ",
            service_cols!(),
            " FROM services WHERE account_id = ?1 AND (?2 IS NULL OR name = ?2)
              ORDER BY name LIMIT ?3 OFFSET ?4"
        ),
        params![account.as_bytes(), name, limit, skip],
        "list services",
        service_from_row,
    )?;
    let total = query_i64(
        conn,
        "SELECT count(*) FROM services WHERE account_id = ?1 AND (?2 IS NULL OR name = ?2)",
        params![account.as_bytes(), name],
        "count services",
    )?;
    let items = services
        .into_iter()
        .map(|service| load_bindings(conn, service))
        .collect::<Result<Vec<_>>>()?;
    Ok(Page {
        items,
        total_count: u64::try_from(total).unwrap_or(0),
    })
}

pub(super) fn get_service_token(
    conn: &Connection,
    id: TokenId,
) -> Result<Option<ServiceTokenRecord>> {
    query_opt(
        conn,
        concat!(
            "SELECT ",
            service_token_cols!(),
            " FROM service_tokens WHERE id = ?1"
        ),
        [id.as_bytes()],
        "get service token",
        service_token_from_row,
    )
}

pub(super) fn list_service_tokens(
    conn: &Connection,
    account: AccountId,
    service: ServiceId,
) -> Result<Vec<ServiceTokenRecord>> {
    query_all(
        conn,
        concat!(
            "SELECT ",
            service_token_cols!(),
            " FROM service_tokens WHERE service_id = ?1 AND account_id = ?2
              ORDER BY created, id"
        ),
        [service.as_bytes(), account.as_bytes()],
        "list service tokens",
        service_token_from_row,
    )
}

pub(super) fn get_secret_by_name(
    conn: &Connection,
    account: AccountId,
    store: StoreId,
    name: &SecretName,
) -> Result<Option<SecretRecord>> {
    query_opt(
        conn,
        concat!(
            "SELECT ",
            secret_cols!(),
            " FROM secrets WHERE store_id = ?1 AND name = ?2 AND account_id = ?3"
        ),
        params![store.as_bytes(), name.as_str(), account.as_bytes()],
        "get secret by name",
        secret_from_row,
    )
}

/// The runtime read: one statement, so one snapshot. The secret is found through the
/// `UNIQUE (store_id, name)` index and its current version through the versions primary key.
/// A LEFT JOIN, so that a secret whose current version row is missing is reported as damage
/// rather than read as "no such secret".
pub(super) fn current_value(
    conn: &Connection,
    account: AccountId,
    store: StoreId,
    name: &SecretName,
) -> Result<Option<(SecretRecord, VersionRecord)>> {
    query_opt(
        conn,
        "SELECT s.id, s.store_id, s.account_id, s.name, s.comment, s.scopes, s.created,
                s.modified, s.version,
                v.dek_id, v.sealed, v.created
         FROM secrets AS s
         LEFT JOIN versions AS v ON v.secret_id = s.id AND v.version = s.version
         WHERE s.store_id = ?1 AND s.name = ?2 AND s.account_id = ?3",
        params![store.as_bytes(), name.as_str(), account.as_bytes()],
        "current value",
        |row| {
            let secret = secret_from_row(row)?;
            if col::<Option<i64>>(row, 11, "versions.created")?.is_none() {
                return Err(StorageError::Corrupted(
                    "a secret's current version row is missing".into(),
                ));
            }
            let version = VersionRecord {
                secret_id: secret.id,
                version: secret.version,
                dek_id: DekId::from_bytes(id_col(row, 9, "versions.dek_id")?),
                sealed: col(row, 10, "versions.sealed")?,
                created: ts_col(row, 11, "versions.created")?,
            };
            Ok((secret, version))
        },
    )
}
