//! Opening connections and migrating the schema. The layout is described for humans in
//! docs/storage-format.md; keep the two in step.

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::codec::DbResultExt;
use crate::{Result, StorageError};

/// One schema upgrade, run inside the migration transaction. Written as a function rather than
/// plain SQL so a later migration can rewrite rows in Rust.
type Migration = fn(&Connection) -> rusqlite::Result<()>;

/// `MIGRATIONS[i]` upgrades a database from `user_version` i to i + 1. Append only: a released
/// entry is never edited, because databases in the field have already run it.
const MIGRATIONS: &[Migration] = &[v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13];

/// The schema version this build writes (`PRAGMA user_version`).
pub(super) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Statement cache size per connection. Listing queries are built per (order, direction,
/// filters) combination, so the cache must hold a few dozen shapes besides the fixed ones.
const STATEMENT_CACHE: usize = 128;

/// The size (bytes) a WAL file is truncated to after a checkpoint has emptied it.
const WAL_SIZE_LIMIT: i64 = 64 << 20;

/// Opens the one read-write connection, sets it up for WAL writes (synced at every COMMIT when
/// `sync_commits`) and migrates.
pub(super) fn open_writer(
    path: &Path,
    busy_timeout: Duration,
    sync_commits: bool,
) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(file_name(path)?, flags).db("open database")?;
    conn.busy_timeout(busy_timeout).db("set busy timeout")?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .db("enable WAL")?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StorageError::Unavailable(format!(
            "the database refused WAL mode (journal_mode is {mode})"
        )));
    }
    // FULL: in WAL mode every COMMIT syncs the WAL, so an acknowledged write survives power
    // loss, not just a process crash. NORMAL survives a process crash and keeps the database
    // consistent on power loss, losing at most the last commits: right for a replica, whose
    // position is committed with its data and which fetches again what it lost.
    conn.pragma_update(
        None,
        "synchronous",
        if sync_commits { "FULL" } else { "NORMAL" },
    )
    .db("set synchronous")?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .db("enable foreign keys")?;
    // A large transaction (a snapshot install, a bulk import) leaves a WAL file as large as
    // what it wrote; after a checkpoint has copied all of it and the log restarts, the next
    // commit cuts the file back to this.
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
        .db("limit the WAL file's size")?;
    migrate(&mut conn)?;
    stable_plans(&conn)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Makes SQLite plan a statement without looking at its bound values (the query planner
/// stability guarantee). Otherwise SQLite 3.54 marks statements whose plan a bound value
/// could change (a bound `LIMIT`, say) and re-prepares them whenever their bindings are
/// cleared, which rusqlite's statement cache does each time a statement goes back to it: the
/// feed's queries were parsed and planned again on every use (~6 % of a 50-edge propagation's
/// CPU; docs/benchmarks.md, "Propagation"). Every query here is planned by its indexes.
fn stable_plans(conn: &Connection) -> Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .db("keep query plans stable")?;
    Ok(())
}

/// Opens a read-only connection (WAL lets it read while the writer writes).
pub(super) fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(file_name(path)?, flags).db("open reader")?;
    conn.busy_timeout(busy_timeout).db("set busy timeout")?;
    stable_plans(&conn)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// `path` as SQLite must be given it to read it as a file name. The bundled SQLite is built
/// with `SQLITE_USE_URI`, so a name starting with `file:` is parsed as a URI whatever the open
/// flags say (`file:x?mode=memory`, say, would not even be a file): an absolute path never
/// starts with `file:`. Also used for `VACUUM INTO`'s destination.
pub(super) fn file_name(path: &Path) -> Result<std::path::PathBuf> {
    std::path::absolute(path).map_err(|e| {
        StorageError::Unavailable(format!(
            "{}: cannot make the path absolute: {e}",
            path.display()
        ))
    })
}

/// The schema a database of `version` has when this build made or migrated it: each
/// `sqlite_schema` row's (type, name, table, SQL with runs of whitespace made one space),
/// sorted. What a database restored from a backup must hold exactly (`backup.rs`).
pub(super) fn expected_schema(version: i64) -> Result<Vec<SchemaRow>> {
    let count = usize::try_from(version)
        .ok()
        .filter(|v| (1..=MIGRATIONS.len()).contains(v))
        .ok_or_else(|| {
            StorageError::Unavailable(format!(
                "schema version {version} is not one this build knows (it knows 1 to {SCHEMA_VERSION})"
            ))
        })?;
    let mut conn = Connection::open_in_memory().db("open a scratch database")?;
    let tx = conn.transaction().db("begin")?;
    for migration in &MIGRATIONS[..count] {
        migration(&tx).db("build the expected schema")?;
    }
    tx.commit().db("commit")?;
    schema_rows(&conn)
}

/// One `sqlite_schema` row, SQL normalised (see [`expected_schema`]).
pub(super) type SchemaRow = (String, String, String, Option<String>);

/// `conn`'s schema rows (see [`expected_schema`]), leaving out the `sqlite_stat1` and
/// `sqlite_stat4` tables, which `ANALYZE` may add and which only steer the query planner.
pub(super) fn schema_rows(conn: &Connection) -> Result<Vec<SchemaRow>> {
    let mut stmt = conn
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema")
        .db("read the schema")?;
    let mut rows: Vec<SchemaRow> = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?
                    .map(|sql| sql.split_whitespace().collect::<Vec<_>>().join(" ")),
            ))
        })
        .db("read the schema")?
        .collect::<rusqlite::Result<_>>()
        .db("read the schema")?;
    // ANALYZE's statistics tables come and go with the planner's work, not the schema; only
    // those tables (by name and type) are left out: a trigger or view named `sqlite_stat…`
    // is compared like any other object.
    rows.retain(|(kind, name, _, _)| {
        !(kind == "table" && matches!(name.as_str(), "sqlite_stat1" | "sqlite_stat4"))
    });
    rows.sort();
    Ok(rows)
}

/// Brings the schema to [`SCHEMA_VERSION`] in one IMMEDIATE transaction: it holds the write lock
/// from the moment it reads the version, so two processes opening one file cannot both migrate,
/// and a failed migration leaves the previous version intact.
fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .db("begin migration")?;
    let current: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .db("read schema version")?;
    let start = usize::try_from(current)
        .ok()
        .filter(|v| *v <= MIGRATIONS.len())
        .ok_or_else(|| {
            StorageError::Unavailable(format!(
                "database schema version {current} is not one this build knows (it knows up to {SCHEMA_VERSION})"
            ))
        })?;
    if start == MIGRATIONS.len() {
        return Ok(());
    }
    for migration in &MIGRATIONS[start..] {
        migration(&tx).db("migrate schema")?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .db("write schema version")?;
    tx.commit().db("commit migration")
}

/// Version 1: the initial schema.
fn v1(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        r#"
        -- Wrapped instance-level keys by purpose ("token-mac", ...).
        CREATE TABLE instance_keys (
            purpose  TEXT    PRIMARY KEY,
            key_id   BLOB    NOT NULL CHECK (length(key_id) = 16),
            kek_id   TEXT    NOT NULL,
            wrapped  BLOB    NOT NULL,
            created  INTEGER NOT NULL
        ) STRICT;

        CREATE TABLE accounts (
            id            BLOB    PRIMARY KEY CHECK (length(id) = 16),
            name          TEXT    NOT NULL,
            created       INTEGER NOT NULL,
            secrets_quota INTEGER CHECK (secrets_quota >= 0),
            -- Maintained by the triggers on `secrets`, so quota checks are O(1).
            secret_count  INTEGER NOT NULL DEFAULT 0 CHECK (secret_count >= 0)
        ) STRICT;
        CREATE INDEX accounts_by_created ON accounts (created, id);

        CREATE TABLE tokens (
            id         BLOB    PRIMARY KEY CHECK (length(id) = 16),
            account_id BLOB    NOT NULL REFERENCES accounts (id),
            name       TEXT    NOT NULL,
            hash       BLOB    NOT NULL CHECK (length(hash) = 32),
            role       TEXT    NOT NULL,
            operator   INTEGER NOT NULL CHECK (operator IN (0, 1)),
            created    INTEGER NOT NULL,
            expires    INTEGER,
            revoked    INTEGER,
            last_used  INTEGER
        ) STRICT;
        CREATE INDEX tokens_by_account ON tokens (account_id);

        CREATE TABLE deks (
            id         BLOB    PRIMARY KEY CHECK (length(id) = 16),
            account_id BLOB    NOT NULL REFERENCES accounts (id),
            kek_id     TEXT    NOT NULL,
            wrapped    BLOB    NOT NULL,
            created    INTEGER NOT NULL
        ) STRICT;
        -- latest_dek: newest `created`, ties broken by insertion order (the implicit rowid,
        -- which every index entry carries).
        CREATE INDEX deks_by_account ON deks (account_id, created);

        CREATE TABLE stores (
            id         BLOB    PRIMARY KEY CHECK (length(id) = 16),
            account_id BLOB    NOT NULL REFERENCES accounts (id),
            name       TEXT    NOT NULL,
            created    INTEGER NOT NULL,
            modified   INTEGER NOT NULL,
            UNIQUE (account_id, name),
            -- The parent key of secrets (store_id, account_id): a secret's account is always
            -- its store's account.
            UNIQUE (id, account_id)
        ) STRICT;
        CREATE INDEX stores_by_created ON stores (account_id, created, id);
        CREATE INDEX stores_by_modified ON stores (account_id, modified, id);

        CREATE TABLE secrets (
            id         BLOB    PRIMARY KEY CHECK (length(id) = 16),
            store_id   BLOB    NOT NULL,
            account_id BLOB    NOT NULL,
            name       TEXT    NOT NULL,
            comment    TEXT    NOT NULL,
            -- ",workers,ai_gateway," (canonical order), or "," for none.
            scopes     TEXT    NOT NULL CHECK (scopes LIKE ',%'),
            created    INTEGER NOT NULL,
            modified   INTEGER NOT NULL,
            version    INTEGER NOT NULL CHECK (version BETWEEN 0 AND 4294967295),
            UNIQUE (store_id, name),
            FOREIGN KEY (store_id, account_id) REFERENCES stores (id, account_id)
        ) STRICT;
        CREATE INDEX secrets_by_created ON secrets (store_id, created, id);
        CREATE INDEX secrets_by_modified ON secrets (store_id, modified, id);

        CREATE TRIGGER secrets_count_insert AFTER INSERT ON secrets BEGIN
            UPDATE accounts SET secret_count = secret_count + 1 WHERE id = NEW.account_id;
        END;
        CREATE TRIGGER secrets_count_delete AFTER DELETE ON secrets BEGIN
            UPDATE accounts SET secret_count = secret_count - 1 WHERE id = OLD.account_id;
        END;
        -- The counters above assume a secret never changes owner.
        CREATE TRIGGER secrets_owner_fixed BEFORE UPDATE OF id, store_id, account_id ON secrets
        BEGIN
            SELECT RAISE(ABORT, 'a secret cannot change id, store or account');
        END;

        -- Sealed value versions: written once, deleted with their secret, never updated.
        CREATE TABLE versions (
            secret_id BLOB    NOT NULL REFERENCES secrets (id) ON DELETE CASCADE,
            version   INTEGER NOT NULL CHECK (version BETWEEN 0 AND 4294967295),
            dek_id    BLOB    NOT NULL REFERENCES deks (id),
            sealed    BLOB    NOT NULL,
            created   INTEGER NOT NULL,
            PRIMARY KEY (secret_id, version)
        ) STRICT;
        CREATE TRIGGER versions_immutable BEFORE UPDATE ON versions BEGIN
            SELECT RAISE(ABORT, 'value versions are immutable');
        END;

        -- The change log. `seq` is assigned by the writer as last + 1; see docs for the hash.
        CREATE TABLE changes (
            seq     INTEGER PRIMARY KEY CHECK (seq >= 1),
            at      INTEGER NOT NULL,
            hash    BLOB    NOT NULL CHECK (length(hash) = 32),
            payload BLOB    NOT NULL
        ) STRICT;
        CREATE TRIGGER changes_no_update BEFORE UPDATE ON changes BEGIN
            SELECT RAISE(ABORT, 'the change log is append-only');
        END;
        CREATE TRIGGER changes_no_delete BEFORE DELETE ON changes BEGIN
            SELECT RAISE(ABORT, 'the change log is append-only');
        END;
        "#,
    )
}

/// Version 2: indexes for listing tokens and deleting accounts.
fn v2(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        r#"
        -- list_tokens reads an account's tokens in (created, id) order straight off the index;
        -- the index still serves the foreign-key check when an account row is deleted.
        DROP INDEX tokens_by_account;
        CREATE INDEX tokens_by_account ON tokens (account_id, created, id);

        -- Deleting a DEK makes SQLite look for versions still sealed under it (the foreign
        -- key); without this index that is a scan of every version of every account, once per
        -- DEK of a deleted account.
        CREATE INDEX versions_by_dek ON versions (dek_id);
        "#,
    )
}

/// Version 3: the audit log and its checkpoints.
fn v3(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        r#"
        -- One hash chain per account. No foreign key to `accounts`: the audit log outlives the
        -- account (delete_account leaves these rows alone). `seq` and `prev_hash` are assigned
        -- by the writer from the account's last row, read inside the writing transaction.
        CREATE TABLE audit (
            account_id  BLOB    NOT NULL CHECK (length(account_id) = 16),
            seq         INTEGER NOT NULL CHECK (seq >= 1),
            at          INTEGER NOT NULL,
            action      TEXT    NOT NULL,
            outcome     TEXT    NOT NULL,
            actor_token BLOB    CHECK (actor_token IS NULL OR length(actor_token) = 16),
            store_id    BLOB    CHECK (store_id IS NULL OR length(store_id) = 16),
            secret_id   BLOB    CHECK (secret_id IS NULL OR length(secret_id) = 16),
            payload     BLOB    NOT NULL,
            prev_hash   BLOB    NOT NULL CHECK (length(prev_hash) = 32),
            hash        BLOB    NOT NULL CHECK (length(hash) = 32),
            PRIMARY KEY (account_id, seq)
        ) STRICT;
        -- The filters of list_audit. Each ends in seq, so a filter on one column reads its
        -- matches already in the listing's order.
        CREATE INDEX audit_by_at ON audit (account_id, at, seq);
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN
            SELECT RAISE(ABORT, 'the audit log is append-only');
        END;
        CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN
            SELECT RAISE(ABORT, 'the audit log is append-only');
        END;

        -- Checkpoints MACed by core (the key never reaches the database).
        CREATE TABLE audit_checkpoints (
            account_id BLOB    NOT NULL CHECK (length(account_id) = 16),
            seq        INTEGER NOT NULL CHECK (seq >= 1),
            hash       BLOB    NOT NULL CHECK (length(hash) = 32),
            mac        BLOB    NOT NULL,
            at         INTEGER NOT NULL,
            PRIMARY KEY (account_id, seq)
        ) STRICT;
        CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints BEGIN
            SELECT RAISE(ABORT, 'audit checkpoints are append-only');
        END;
        CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints BEGIN
            SELECT RAISE(ABORT, 'audit checkpoints are append-only');
        END;
        "#,
    )
}

/// Version 4: services, their bindings and their tokens.
fn v4(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        r#"
        -- A named consumer of secrets (the analogue of a Worker). `kind` is the name of the
        -- scope every bound secret must carry ("workers", ...). UNIQUE (account_id, name)
        -- serves lookups and listings by name and the foreign-key check when an account row
        -- is deleted.
        CREATE TABLE services (
            id         BLOB    PRIMARY KEY CHECK (length(id) = 16),
            account_id BLOB    NOT NULL REFERENCES accounts (id),
            name       TEXT    NOT NULL,
            kind       TEXT    NOT NULL,
            created    INTEGER NOT NULL,
            modified   INTEGER NOT NULL,
            UNIQUE (account_id, name),
            -- The parent key of service_tokens (service_id, account_id): a token's account is
            -- always its service's account.
            UNIQUE (id, account_id)
        ) STRICT;

        -- A service's bindings, in one sequence per service: its secret bindings in the order
        -- given, then its store bindings in the order given. `secret_name` is NULL for a store
        -- binding. No reference to stores or secrets: bindings name them by store id and
        -- secret name and are resolved at read time, so deleting a store or a secret leaves
        -- them alone. Clustered by service (WITHOUT ROWID), so a service's bindings are one
        -- range of one b-tree.
        CREATE TABLE service_bindings (
            service_id  BLOB    NOT NULL REFERENCES services (id) ON DELETE CASCADE,
            position    INTEGER NOT NULL CHECK (position >= 0),
            binding     TEXT    NOT NULL,
            store_id    BLOB    NOT NULL CHECK (length(store_id) = 16),
            secret_name TEXT,
            PRIMARY KEY (service_id, position),
            UNIQUE (service_id, binding)
        ) STRICT, WITHOUT ROWID;

        -- Tokens a service reads its secrets with: HMAC-SHA256 of the token under the
        -- "service-token-mac" instance key. Deleted with their service.
        CREATE TABLE service_tokens (
            id         BLOB    PRIMARY KEY CHECK (length(id) = 16),
            account_id BLOB    NOT NULL,
            service_id BLOB    NOT NULL,
            hash       BLOB    NOT NULL CHECK (length(hash) = 32),
            created    INTEGER NOT NULL,
            revoked    INTEGER,
            FOREIGN KEY (service_id, account_id) REFERENCES services (id, account_id)
                ON DELETE CASCADE
        ) STRICT;
        -- list_service_tokens reads it in order; it also serves the cascade from services.
        CREATE INDEX service_tokens_by_service ON service_tokens (service_id, created, id);
        "#,
    )
}

fn v5(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        r#"
        -- Edge nodes registered by the operator. `hash` is the HMAC-SHA256 of the node token
        -- under the "node-token-mac" instance key (replicated, so relays verify node tokens
        -- too). A name is unique among the nodes not revoked.
        CREATE TABLE nodes (
            id      BLOB    PRIMARY KEY CHECK (length(id) = 16),
            name    TEXT    NOT NULL,
            hash    BLOB    NOT NULL CHECK (length(hash) = 32),
            created INTEGER NOT NULL,
            revoked INTEGER
        ) STRICT;
        CREATE UNIQUE INDEX nodes_active_name ON nodes (name) WHERE revoked IS NULL;
        CREATE INDEX nodes_by_created ON nodes (created, id);

        -- The replicated log's identity and base (one row). `cluster_id` names the cluster
        -- whose log this is: made by the control plane, adopted by an edge from its first
        -- snapshot. Entries up to `base_seq` are no longer held (compacted on the control
        -- plane, covered by the installed snapshot on an edge); `base_hash` is the hash of entry
        -- `base_seq` (the genesis hash for 0), so the log chains on from it.
        CREATE TABLE replication (
            id         INTEGER PRIMARY KEY CHECK (id = 1),
            cluster_id BLOB    NOT NULL CHECK (length(cluster_id) = 16),
            base_seq   INTEGER NOT NULL CHECK (base_seq >= 0),
            base_hash  BLOB    NOT NULL CHECK (length(base_hash) = 32),
            base_at    INTEGER NOT NULL
        ) STRICT;

        -- The log stays append-only above its base: only entries the base covers may go.
        DROP TRIGGER changes_no_delete;
        CREATE TRIGGER changes_no_delete BEFORE DELETE ON changes
        WHEN old.seq > COALESCE((SELECT base_seq FROM replication WHERE id = 1), 0)
        BEGIN
            SELECT RAISE(ABORT, 'change log entries above the base are append-only');
        END;

        -- Batches of access events received from edges (control plane): the batch id makes a
        -- retried delivery a no-op.
        CREATE TABLE access_batches (
            id       BLOB    PRIMARY KEY CHECK (length(id) = 16),
            node_id  BLOB    NOT NULL CHECK (length(node_id) = 16),
            received INTEGER NOT NULL
        ) STRICT;

        -- Access-event batches an edge (or relay) has yet to deliver upstream: kept until the
        -- upstream acknowledges them, so a crash or an outage delays them, never loses them.
        CREATE TABLE outbox (
            id      BLOB    PRIMARY KEY CHECK (length(id) = 16),
            created INTEGER NOT NULL,
            body    BLOB    NOT NULL
        ) STRICT;
        "#,
    )
}

/// Version 6: KEK rotation finds the keys an old KEK wraps through an index, not a scan of every
/// DEK per batch.
fn v6(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("CREATE INDEX deks_by_kek ON deks (kek_id);")
}

/// Version 7: edges hold no KEK. The control plane keeps, beside each DEK's and each replicated
/// instance key's KEK wrap (`kek_id`, `wrapped`, which only it can open), the same key wrapped
/// by the replication key (RK) of `rk_version`: the form the feed and snapshots carry. A node
/// records the X25519 public key it registered, and `node_grants` holds the RK versions sealed
/// to each node's key (replicated: every edge stores all grants, opens only its own).
fn v7(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        r#"
        ALTER TABLE deks ADD COLUMN rk_version INTEGER CHECK (rk_version > 0);
        ALTER TABLE deks ADD COLUMN rk_wrapped BLOB;
        ALTER TABLE instance_keys ADD COLUMN rk_version INTEGER CHECK (rk_version > 0);
        ALTER TABLE instance_keys ADD COLUMN rk_wrapped BLOB;
        ALTER TABLE nodes ADD COLUMN public_key BLOB CHECK (length(public_key) = 32);

        CREATE TABLE node_grants (
            node_id    BLOB    NOT NULL CHECK (length(node_id) = 16),
            rk_version INTEGER NOT NULL CHECK (rk_version > 0),
            ephemeral  BLOB    NOT NULL CHECK (length(ephemeral) = 32),
            sealed     BLOB    NOT NULL,
            PRIMARY KEY (node_id, rk_version)
        ) STRICT;
        -- No two nodes, revoked ones included, share a key (grants to it open with one key).
        CREATE UNIQUE INDEX nodes_by_public_key ON nodes (public_key)
            WHERE public_key IS NOT NULL;
        "#,
    )
}

/// Version 8: the control plane signs its feed. `change_signatures` holds its signatures over
/// log checkpoints (cluster id, seq, hash; see `coffer_storage::checkpoint_message`): one per
/// committed write batch, over its last entry, written in the batch's transaction. A replica
/// keeps the ones it received so a relay serves them on. Dropped with the entries they sign
/// (compaction, installs).
fn v8(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        r#"
        CREATE TABLE change_signatures (
            seq       INTEGER PRIMARY KEY CHECK (seq > 0),
            signature BLOB    NOT NULL CHECK (length(signature) = 64)
        ) STRICT;
        "#,
    )
}

/// Version 9: KEK ids whose version was retired (its key destroyed). A DEK or instance key
/// wrapped by one of them is refused on insert (`Conflict`: the write retries with a fresh
/// DEK), and an id enters the table only in the transaction that finds no key wrapped by it:
/// so no write that took a DEK before a rotation can store it after its KEK is gone.
fn v9(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        r#"
        CREATE TABLE retired_keks (
            kek_id  TEXT    PRIMARY KEY NOT NULL,
            retired INTEGER NOT NULL
        ) STRICT, WITHOUT ROWID;
        "#,
    )
}

/// Version 10: values are re-sealed onto an account's current DEK (core's `reseal.rs`). A
/// version row keeps its secret, number and creation time for good; only its DEK and sealed
/// bytes may be replaced (together, compare-and-set, by `reseal_values` and the replica's
/// `ValueResealed`). `deks.retired` marks DEKs that never seal again: those of an account
/// whose store's deletion gave them up, and every DEK that existed when a node's revocation
/// rotated the replication key (made under the old one). `latest_dek` skips them, their
/// values are re-sealed away from, then they are destroyed. Stored, so a restart in between
/// changes nothing. DEKs made before the newest replication key (the rule was their creation
/// time until now) are marked once here.
fn v10(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        r#"
        ALTER TABLE deks ADD COLUMN retired INTEGER NOT NULL DEFAULT 0 CHECK (retired IN (0, 1));
        UPDATE deks SET retired = 1
        WHERE created <= (SELECT max(created) FROM instance_keys
                          WHERE purpose LIKE 'replication-key:%');
        DROP TRIGGER versions_immutable;
        CREATE TRIGGER versions_immutable BEFORE UPDATE OF secret_id, version, created ON versions
        BEGIN
            SELECT RAISE(ABORT, 'a value version keeps its secret, number and creation time');
        END;
        "#,
    )
}

/// Version 11: the ids of destroyed DEKs, entered in the transaction that destroys them. A
/// write that took a DEK before its destruction (a bulk create, a queued PATCH) must not store
/// it again: inserting one of these ids is refused (`Conflict`: the write retries with a fresh
/// DEK), so a destroyed DEK never comes back, on the control plane or in the feed.
/// `compacted` is 0 until the change log has been compacted past every entry carrying the DEK
/// (which the lifecycle job does at most once per its minimum gap, not per destruction).
fn v11(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        r#"
        CREATE TABLE destroyed_deks (
            id        BLOB    PRIMARY KEY NOT NULL CHECK (length(id) = 16),
            destroyed INTEGER NOT NULL,
            compacted INTEGER NOT NULL DEFAULT 0 CHECK (compacted IN (0, 1))
        ) STRICT, WITHOUT ROWID;
        "#,
    )
}

/// Version 12: a replication key per account with a KEK of its own (ARK), so that deleting
/// the account shreds its replication-key wraps too (docs/key-hierarchy.md, "Shredding an
/// account"). `account_replication_keys` holds its versions wrapped by the *account's* KEK
/// (never the instance KEK; control plane only). `deks.rk_account` = 1: the DEK's
/// `rk_version`/`rk_wrapped` are a wrap by its account's ARK of that version (`ark:<n>` in the
/// feed), not by the instance RK. `account_node_keys` are the X25519 keys nodes registered for
/// one account each (never a node key, never shared), and `account_grants` the ARK versions
/// sealed to them (replicated: an edge stores every account grant, opens its own).
fn v12(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        r#"
        ALTER TABLE deks ADD COLUMN rk_account INTEGER NOT NULL DEFAULT 0
            CHECK (rk_account IN (0, 1));
        CREATE TABLE account_replication_keys (
            account_id BLOB    NOT NULL REFERENCES accounts (id) CHECK (length(account_id) = 16),
            version    INTEGER NOT NULL CHECK (version > 0),
            key_id     BLOB    NOT NULL CHECK (length(key_id) = 16),
            kek_id     TEXT    NOT NULL,
            wrapped    BLOB    NOT NULL,
            created    INTEGER NOT NULL,
            PRIMARY KEY (account_id, version)
        ) STRICT, WITHOUT ROWID;
        CREATE TABLE account_node_keys (
            account_id BLOB    NOT NULL CHECK (length(account_id) = 16),
            node_id    BLOB    NOT NULL CHECK (length(node_id) = 16),
            public_key BLOB    NOT NULL UNIQUE CHECK (length(public_key) = 32),
            PRIMARY KEY (account_id, node_id)
        ) STRICT, WITHOUT ROWID;
        CREATE TABLE account_grants (
            account_id  BLOB    NOT NULL CHECK (length(account_id) = 16),
            node_id     BLOB    NOT NULL CHECK (length(node_id) = 16),
            ark_version INTEGER NOT NULL CHECK (ark_version > 0),
            ephemeral   BLOB    NOT NULL CHECK (length(ephemeral) = 32),
            sealed      BLOB    NOT NULL,
            PRIMARY KEY (account_id, node_id, ark_version)
        ) STRICT, WITHOUT ROWID;
        "#,
    )
}

/// Version 13: lists flat in the store's size (docs/benchmarks.md, "Lists"). `stores.secret_count`
/// is the store's secret count, kept by the same triggers as the account's (in the transaction
/// of every insert and delete of a secret), so an unfiltered list's `total_count` is one row,
/// not a count of the store; filled here for existing stores. Each order of `list_secrets` gets
/// an index ending in the id tie-break (comment and status, that is id, had none: they sorted
/// the whole store), so a page is an index walk; name is unique per store, its UNIQUE index
/// serves it.
fn v13(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        r#"
        ALTER TABLE stores ADD COLUMN secret_count INTEGER NOT NULL DEFAULT 0
            CHECK (secret_count >= 0);
        UPDATE stores SET secret_count = (SELECT count(*) FROM secrets WHERE store_id = stores.id);
        DROP TRIGGER secrets_count_insert;
        CREATE TRIGGER secrets_count_insert AFTER INSERT ON secrets BEGIN
            UPDATE accounts SET secret_count = secret_count + 1 WHERE id = NEW.account_id;
            UPDATE stores SET secret_count = secret_count + 1 WHERE id = NEW.store_id;
        END;
        DROP TRIGGER secrets_count_delete;
        CREATE TRIGGER secrets_count_delete AFTER DELETE ON secrets BEGIN
            UPDATE accounts SET secret_count = secret_count - 1 WHERE id = OLD.account_id;
            UPDATE stores SET secret_count = secret_count - 1 WHERE id = OLD.store_id;
        END;
        CREATE INDEX secrets_by_comment ON secrets (store_id, comment, id);
        CREATE INDEX secrets_by_id ON secrets (store_id, id);
        "#,
    )
}

/// The first schema row one side has and the other lacks, as "extra|missing TYPE NAME".
pub(super) fn first_difference(expected: &[SchemaRow], found: &[SchemaRow]) -> Option<String> {
    let describe = |(kind, name, _, _): &SchemaRow| format!("{kind} {name}");
    if let Some(extra) = found.iter().find(|r| !expected.contains(r)) {
        let same_name = expected.iter().any(|e| e.1 == extra.1);
        return Some(format!(
            "{} {}",
            if same_name { "altered" } else { "unexpected" },
            describe(extra)
        ));
    }
    expected
        .iter()
        .find(|r| !found.contains(r))
        .map(|missing| format!("missing {}", describe(missing)))
}

#[cfg(test)]
mod tests;
