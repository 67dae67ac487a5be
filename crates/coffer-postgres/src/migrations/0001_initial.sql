-- Coffer's PostgreSQL schema, version 1: every table of the SQLite schema (version 12,
-- crates/coffer-storage/src/sqlite/schema.rs), translated. Blobs are BYTEA, integers BIGINT
-- (u32 values with a range check), booleans BOOLEAN. Names and other ordered text are
-- COLLATE "C", so listings order byte-wise whatever the database's locale, like SQLite's.
-- docs/storage-format.md describes the layout; keep the two in step.

-- Wrapped instance-level keys by purpose ("token-mac", ...), with their RK wrap where they
-- have one.
CREATE TABLE instance_keys (
    purpose    TEXT COLLATE "C" PRIMARY KEY,
    key_id     BYTEA  NOT NULL CHECK (length(key_id) = 16),
    kek_id     TEXT   NOT NULL,
    wrapped    BYTEA  NOT NULL,
    created    BIGINT NOT NULL,
    rk_version BIGINT CHECK (rk_version BETWEEN 1 AND 4294967295),
    rk_wrapped BYTEA
);

CREATE TABLE accounts (
    id            BYTEA  PRIMARY KEY CHECK (length(id) = 16),
    name          TEXT   NOT NULL,
    created       BIGINT NOT NULL,
    secrets_quota BIGINT CHECK (secrets_quota >= 0),
    -- Maintained by the triggers on `secrets`, so quota checks are O(1).
    secret_count  BIGINT NOT NULL DEFAULT 0 CHECK (secret_count >= 0)
);
CREATE INDEX accounts_by_created ON accounts (created, id);

CREATE TABLE tokens (
    id         BYTEA   PRIMARY KEY CHECK (length(id) = 16),
    account_id BYTEA   NOT NULL REFERENCES accounts (id),
    name       TEXT    NOT NULL,
    hash       BYTEA   NOT NULL CHECK (length(hash) = 32),
    role       TEXT    NOT NULL,
    operator   BOOLEAN NOT NULL,
    created    BIGINT  NOT NULL,
    expires    BIGINT,
    revoked    BIGINT,
    last_used  BIGINT
);
-- list_tokens reads an account's tokens in (created, id) order off the index.
CREATE INDEX tokens_by_account ON tokens (account_id, created, id);

CREATE TABLE deks (
    id         BYTEA   PRIMARY KEY CHECK (length(id) = 16),
    account_id BYTEA   NOT NULL REFERENCES accounts (id),
    kek_id     TEXT COLLATE "C" NOT NULL,
    wrapped    BYTEA   NOT NULL,
    created    BIGINT  NOT NULL,
    rk_version BIGINT  CHECK (rk_version BETWEEN 1 AND 4294967295),
    rk_wrapped BYTEA,
    -- Never seals again (see SQLite's version 10).
    retired    BOOLEAN NOT NULL DEFAULT false,
    -- rk_version/rk_wrapped are a wrap by the account's ARK, not the instance RK.
    rk_account BOOLEAN NOT NULL DEFAULT false,
    -- Insertion order: latest_dek breaks ties of `created` by it (SQLite's rowid).
    ord        BIGINT  GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX deks_by_account ON deks (account_id, created, ord);
CREATE INDEX deks_by_kek ON deks (kek_id);

CREATE TABLE stores (
    id         BYTEA  PRIMARY KEY CHECK (length(id) = 16),
    account_id BYTEA  NOT NULL REFERENCES accounts (id),
    name       TEXT COLLATE "C" NOT NULL,
    created    BIGINT NOT NULL,
    modified   BIGINT NOT NULL,
    CONSTRAINT stores_name_unique UNIQUE (account_id, name),
    -- The parent key of secrets (store_id, account_id): a secret's account is always its
    -- store's account.
    CONSTRAINT stores_id_account UNIQUE (id, account_id)
);
-- Keyset pagination of list_stores by each order (name: stores_name_unique).
CREATE INDEX stores_by_created ON stores (account_id, created, id);
CREATE INDEX stores_by_modified ON stores (account_id, modified, id);

CREATE TABLE secrets (
    id         BYTEA  PRIMARY KEY CHECK (length(id) = 16),
    store_id   BYTEA  NOT NULL,
    account_id BYTEA  NOT NULL,
    name       TEXT COLLATE "C" NOT NULL,
    comment    TEXT COLLATE "C" NOT NULL,
    -- ",workers,ai_gateway," (canonical order), or "," for none.
    scopes     TEXT   NOT NULL CHECK (scopes LIKE ',%'),
    created    BIGINT NOT NULL,
    modified   BIGINT NOT NULL,
    version    BIGINT NOT NULL CHECK (version BETWEEN 0 AND 4294967295),
    CONSTRAINT secrets_name_unique UNIQUE (store_id, name),
    FOREIGN KEY (store_id, account_id) REFERENCES stores (id, account_id)
);
-- Keyset pagination of list_secrets by each order (name: secrets_name_unique).
CREATE INDEX secrets_by_created ON secrets (store_id, created, id);
CREATE INDEX secrets_by_modified ON secrets (store_id, modified, id);
CREATE INDEX secrets_by_comment ON secrets (store_id, comment, id);
CREATE INDEX secrets_by_id ON secrets (store_id, id);
CREATE INDEX secrets_by_account ON secrets (account_id);

CREATE FUNCTION coffer_secrets_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE accounts SET secret_count = secret_count + 1 WHERE id = NEW.account_id;
        RETURN NEW;
    END IF;
    UPDATE accounts SET secret_count = secret_count - 1 WHERE id = OLD.account_id;
    RETURN OLD;
END $$;
CREATE TRIGGER secrets_count AFTER INSERT OR DELETE ON secrets
    FOR EACH ROW EXECUTE FUNCTION coffer_secrets_count();

-- Raises its first argument: the body of every "this never changes" trigger.
CREATE FUNCTION coffer_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'restrict_violation';
END $$;
-- The counters above assume a secret never changes owner.
CREATE TRIGGER secrets_owner_fixed BEFORE UPDATE OF id, store_id, account_id ON secrets
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id
                       OR OLD.store_id IS DISTINCT FROM NEW.store_id
                       OR OLD.account_id IS DISTINCT FROM NEW.account_id)
    EXECUTE FUNCTION coffer_refuse('a secret cannot change id, store or account');

-- Sealed value versions: deleted with their secret; only the DEK and sealed bytes may be
-- replaced (re-seal, compare-and-set).
CREATE TABLE versions (
    secret_id BYTEA  NOT NULL REFERENCES secrets (id) ON DELETE CASCADE,
    version   BIGINT NOT NULL CHECK (version BETWEEN 0 AND 4294967295),
    dek_id    BYTEA  NOT NULL REFERENCES deks (id),
    sealed    BYTEA  NOT NULL,
    created   BIGINT NOT NULL,
    PRIMARY KEY (secret_id, version)
);
CREATE INDEX versions_by_dek ON versions (dek_id);
CREATE TRIGGER versions_immutable BEFORE UPDATE OF secret_id, version, created ON versions
    FOR EACH ROW WHEN (OLD.secret_id IS DISTINCT FROM NEW.secret_id
                       OR OLD.version IS DISTINCT FROM NEW.version
                       OR OLD.created IS DISTINCT FROM NEW.created)
    EXECUTE FUNCTION coffer_refuse('a value version keeps its secret, number and creation time');

-- The replicated log's identity and base (one row, made with the cluster id).
CREATE TABLE replication (
    id         SMALLINT PRIMARY KEY CHECK (id = 1),
    cluster_id BYTEA    NOT NULL CHECK (length(cluster_id) = 16),
    base_seq   BIGINT   NOT NULL CHECK (base_seq >= 0),
    base_hash  BYTEA    NOT NULL CHECK (length(base_hash) = 32),
    base_at    BIGINT   NOT NULL
);

-- The change log. `seq` is assigned by the writer as head + 1 under the writer lock.
CREATE TABLE changes (
    seq     BIGINT PRIMARY KEY CHECK (seq >= 1),
    at      BIGINT NOT NULL,
    hash    BYTEA  NOT NULL CHECK (length(hash) = 32),
    payload BYTEA  NOT NULL
);
CREATE TRIGGER changes_no_update BEFORE UPDATE ON changes
    FOR EACH ROW EXECUTE FUNCTION coffer_refuse('the change log is append-only');
-- The log stays append-only above its base: only entries the base covers may go.
CREATE FUNCTION coffer_changes_no_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.seq > COALESCE((SELECT base_seq FROM replication WHERE id = 1), 0) THEN
        RAISE EXCEPTION 'change log entries above the base are append-only'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN OLD;
END $$;
CREATE TRIGGER changes_no_delete BEFORE DELETE ON changes
    FOR EACH ROW EXECUTE FUNCTION coffer_changes_no_delete();

-- The log's head (one row, always there): the last entry's seq, hash and time, or the base's
-- when no entry is held (seq 0 and the genesis hash for a log that never had one). Every
-- write reads it under the writer lock and moves it in its transaction, so appends from any
-- number of instances chain on, gap-free, in commit order.
CREATE TABLE change_head (
    id   SMALLINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT   NOT NULL CHECK (seq >= 0),
    hash BYTEA    NOT NULL CHECK (length(hash) = 32),
    at   BIGINT   NOT NULL
);
INSERT INTO change_head (id, seq, hash, at)
    VALUES (1, 0, '\x0000000000000000000000000000000000000000000000000000000000000000',
            -9223372036854775808);

-- The control plane's signatures over log checkpoints (one per committed write that appended,
-- over its last entry). Dropped with the entries they sign.
CREATE TABLE change_signatures (
    seq       BIGINT PRIMARY KEY CHECK (seq > 0),
    signature BYTEA  NOT NULL CHECK (length(signature) = 64)
);

-- One hash chain per account. No foreign key to `accounts`: the audit log outlives the
-- account. `seq` and `prev_hash` come from the account's last row, read under the writer lock.
CREATE TABLE audit (
    account_id  BYTEA  NOT NULL CHECK (length(account_id) = 16),
    seq         BIGINT NOT NULL CHECK (seq >= 1),
    at          BIGINT NOT NULL,
    action      TEXT   NOT NULL,
    outcome     TEXT   NOT NULL,
    actor_token BYTEA  CHECK (actor_token IS NULL OR length(actor_token) = 16),
    store_id    BYTEA  CHECK (store_id IS NULL OR length(store_id) = 16),
    secret_id   BYTEA  CHECK (secret_id IS NULL OR length(secret_id) = 16),
    payload     BYTEA  NOT NULL,
    prev_hash   BYTEA  NOT NULL CHECK (length(prev_hash) = 32),
    hash        BYTEA  NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (account_id, seq)
);
CREATE INDEX audit_by_at ON audit (account_id, at, seq);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    FOR EACH ROW EXECUTE FUNCTION coffer_refuse('the audit log is append-only');
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION coffer_refuse('the audit log is append-only');

-- Checkpoints MACed by core (the key never reaches the database).
CREATE TABLE audit_checkpoints (
    account_id BYTEA  NOT NULL CHECK (length(account_id) = 16),
    seq        BIGINT NOT NULL CHECK (seq >= 1),
    hash       BYTEA  NOT NULL CHECK (length(hash) = 32),
    mac        BYTEA  NOT NULL,
    at         BIGINT NOT NULL,
    CONSTRAINT audit_checkpoints_pkey PRIMARY KEY (account_id, seq)
);
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION coffer_refuse('audit checkpoints are append-only');
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION coffer_refuse('audit checkpoints are append-only');

-- A named consumer of secrets. `kind` is the scope every bound secret must carry.
CREATE TABLE services (
    id         BYTEA  PRIMARY KEY CHECK (length(id) = 16),
    account_id BYTEA  NOT NULL REFERENCES accounts (id),
    name       TEXT COLLATE "C" NOT NULL,
    kind       TEXT   NOT NULL,
    created    BIGINT NOT NULL,
    modified   BIGINT NOT NULL,
    CONSTRAINT services_name_unique UNIQUE (account_id, name),
    CONSTRAINT services_id_account UNIQUE (id, account_id)
);

-- A service's bindings, in one sequence per service: its secret bindings in the order given,
-- then its store bindings. `secret_name` is NULL for a store binding. No reference to stores
-- or secrets: bindings are resolved at read time.
CREATE TABLE service_bindings (
    service_id  BYTEA  NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    position    BIGINT NOT NULL CHECK (position >= 0),
    binding     TEXT   NOT NULL,
    store_id    BYTEA  NOT NULL CHECK (length(store_id) = 16),
    secret_name TEXT,
    PRIMARY KEY (service_id, position),
    UNIQUE (service_id, binding)
);

-- HMAC-SHA256 of service tokens under the "service-token-mac" instance key.
CREATE TABLE service_tokens (
    id         BYTEA  PRIMARY KEY CHECK (length(id) = 16),
    account_id BYTEA  NOT NULL,
    service_id BYTEA  NOT NULL,
    hash       BYTEA  NOT NULL CHECK (length(hash) = 32),
    created    BIGINT NOT NULL,
    revoked    BIGINT,
    FOREIGN KEY (service_id, account_id) REFERENCES services (id, account_id) ON DELETE CASCADE
);
CREATE INDEX service_tokens_by_service ON service_tokens (service_id, created, id);

-- Edge nodes. `hash` is the HMAC-SHA256 of the node token under "node-token-mac". A name is
-- unique among the nodes not revoked; no two nodes, revoked ones included, share a key.
CREATE TABLE nodes (
    id         BYTEA  PRIMARY KEY CHECK (length(id) = 16),
    name       TEXT COLLATE "C" NOT NULL,
    hash       BYTEA  NOT NULL CHECK (length(hash) = 32),
    created    BIGINT NOT NULL,
    revoked    BIGINT,
    public_key BYTEA  CHECK (length(public_key) = 32)
);
CREATE UNIQUE INDEX nodes_active_name ON nodes (name) WHERE revoked IS NULL;
CREATE INDEX nodes_by_created ON nodes (created, id);
CREATE UNIQUE INDEX nodes_by_public_key ON nodes (public_key) WHERE public_key IS NOT NULL;

-- Replication-key versions sealed to each node's key (replicated).
CREATE TABLE node_grants (
    node_id    BYTEA  NOT NULL CHECK (length(node_id) = 16),
    rk_version BIGINT NOT NULL CHECK (rk_version BETWEEN 1 AND 4294967295),
    ephemeral  BYTEA  NOT NULL CHECK (length(ephemeral) = 32),
    sealed     BYTEA  NOT NULL,
    PRIMARY KEY (node_id, rk_version)
);
CREATE INDEX node_grants_by_version ON node_grants (rk_version, node_id);

-- Batches of access events received from edges: the batch id makes a retried delivery a
-- no-op.
CREATE TABLE access_batches (
    id       BYTEA  PRIMARY KEY CHECK (length(id) = 16),
    node_id  BYTEA  NOT NULL CHECK (length(node_id) = 16),
    received BIGINT NOT NULL
);

-- An edge's undelivered access-event batches (edges run on SQLite; kept so both schemas hold
-- the same tables). `ord` is the order of the puts (SQLite's rowid).
CREATE TABLE outbox (
    id      BYTEA  PRIMARY KEY CHECK (length(id) = 16),
    created BIGINT NOT NULL,
    body    BYTEA  NOT NULL,
    ord     BIGINT GENERATED ALWAYS AS IDENTITY
);

-- KEK ids whose version was retired (its key destroyed).
CREATE TABLE retired_keks (
    kek_id  TEXT COLLATE "C" PRIMARY KEY,
    retired BIGINT NOT NULL
);

-- The ids of destroyed DEKs; `compacted` once the log holds no entry carrying one.
CREATE TABLE destroyed_deks (
    id        BYTEA   PRIMARY KEY CHECK (length(id) = 16),
    destroyed BIGINT  NOT NULL,
    compacted BOOLEAN NOT NULL DEFAULT false
);

-- Account replication keys (ARKs), wrapped by the account's own KEK (control plane only).
CREATE TABLE account_replication_keys (
    account_id BYTEA  NOT NULL REFERENCES accounts (id) CHECK (length(account_id) = 16),
    version    BIGINT NOT NULL CHECK (version BETWEEN 1 AND 4294967295),
    key_id     BYTEA  NOT NULL CHECK (length(key_id) = 16),
    kek_id     TEXT   NOT NULL,
    wrapped    BYTEA  NOT NULL,
    created    BIGINT NOT NULL,
    PRIMARY KEY (account_id, version)
);

-- The X25519 keys nodes registered for one account each (never a node key, never shared).
CREATE TABLE account_node_keys (
    account_id BYTEA NOT NULL CHECK (length(account_id) = 16),
    node_id    BYTEA NOT NULL CHECK (length(node_id) = 16),
    public_key BYTEA NOT NULL UNIQUE CHECK (length(public_key) = 32),
    PRIMARY KEY (account_id, node_id)
);

-- ARK versions sealed to the account node keys (replicated).
CREATE TABLE account_grants (
    account_id  BYTEA  NOT NULL CHECK (length(account_id) = 16),
    node_id     BYTEA  NOT NULL CHECK (length(node_id) = 16),
    ark_version BIGINT NOT NULL CHECK (ark_version BETWEEN 1 AND 4294967295),
    ephemeral   BYTEA  NOT NULL CHECK (length(ephemeral) = 32),
    sealed      BYTEA  NOT NULL,
    PRIMARY KEY (account_id, node_id, ark_version)
);
