//! What Coffer's schema (this version's migrations) must hold for `check_integrity` to trust
//! PostgreSQL's enforcement: every constraint, every trigger of its own, and the foreign keys
//! checked row by row. Constants, not read from the catalog (a catalog an operator or a dump
//! changed is what they check); `integrity_tests.rs` compares them with what the migrations
//! make on a fresh database, so they cannot drift from the schema.

/// A foreign key of the schema, checked row by row (`integrity.rs`): `columns` of `table`
/// must name a row of `parent` by `parent_columns`. `key` names the child row in a problem
/// (its primary key; ids in hex: never user text).
pub(crate) struct ForeignKey {
    pub(crate) name: &'static str,
    pub(crate) table: &'static str,
    pub(crate) columns: &'static [&'static str],
    pub(crate) parent: &'static str,
    pub(crate) parent_columns: &'static [&'static str],
    pub(crate) key: &'static str,
}

const BY_ID: &str = "encode(c.id, 'hex')";

/// Every foreign key the migrations make. A secret's store must be its account's (lists read
/// a store's secrets by `store_id` alone), a service token's service its account's, and so on.
pub(crate) const FOREIGN_KEYS: &[ForeignKey] = &[
    ForeignKey {
        name: "stores_account_id_fkey",
        table: "stores",
        columns: &["account_id"],
        parent: "accounts",
        parent_columns: &["id"],
        key: BY_ID,
    },
    ForeignKey {
        name: "secrets_store_id_account_id_fkey",
        table: "secrets",
        columns: &["store_id", "account_id"],
        parent: "stores",
        parent_columns: &["id", "account_id"],
        key: BY_ID,
    },
    ForeignKey {
        name: "versions_secret_id_fkey",
        table: "versions",
        columns: &["secret_id"],
        parent: "secrets",
        parent_columns: &["id"],
        key: "encode(c.secret_id, 'hex') || ' version ' || c.version",
    },
    ForeignKey {
        name: "versions_dek_id_fkey",
        table: "versions",
        columns: &["dek_id"],
        parent: "deks",
        parent_columns: &["id"],
        key: "encode(c.secret_id, 'hex') || ' version ' || c.version",
    },
    ForeignKey {
        name: "deks_account_id_fkey",
        table: "deks",
        columns: &["account_id"],
        parent: "accounts",
        parent_columns: &["id"],
        key: BY_ID,
    },
    ForeignKey {
        name: "tokens_account_id_fkey",
        table: "tokens",
        columns: &["account_id"],
        parent: "accounts",
        parent_columns: &["id"],
        key: BY_ID,
    },
    ForeignKey {
        name: "services_account_id_fkey",
        table: "services",
        columns: &["account_id"],
        parent: "accounts",
        parent_columns: &["id"],
        key: BY_ID,
    },
    ForeignKey {
        name: "service_bindings_service_id_fkey",
        table: "service_bindings",
        columns: &["service_id"],
        parent: "services",
        parent_columns: &["id"],
        key: "encode(c.service_id, 'hex') || ' position ' || c.position",
    },
    ForeignKey {
        name: "service_tokens_service_id_account_id_fkey",
        table: "service_tokens",
        columns: &["service_id", "account_id"],
        parent: "services",
        parent_columns: &["id", "account_id"],
        key: BY_ID,
    },
    ForeignKey {
        name: "account_replication_keys_account_id_fkey",
        table: "account_replication_keys",
        columns: &["account_id"],
        parent: "accounts",
        parent_columns: &["id"],
        key: "encode(c.account_id, 'hex') || ' version ' || c.version",
    },
];

/// Every constraint (primary key, unique, check, foreign key) the migrations make, as
/// (table, constraint), for this schema version.
pub(crate) const CONSTRAINTS: &[(&str, &str)] = &[
    ("access_batches", "access_batches_id_check"),
    ("access_batches", "access_batches_node_id_check"),
    ("access_batches", "access_batches_pkey"),
    ("account_grants", "account_grants_account_id_check"),
    ("account_grants", "account_grants_ark_version_check"),
    ("account_grants", "account_grants_ephemeral_check"),
    ("account_grants", "account_grants_node_id_check"),
    ("account_grants", "account_grants_pkey"),
    ("account_node_keys", "account_node_keys_account_id_check"),
    ("account_node_keys", "account_node_keys_node_id_check"),
    ("account_node_keys", "account_node_keys_pkey"),
    ("account_node_keys", "account_node_keys_public_key_check"),
    ("account_node_keys", "account_node_keys_public_key_key"),
    (
        "account_replication_keys",
        "account_replication_keys_account_id_check",
    ),
    (
        "account_replication_keys",
        "account_replication_keys_account_id_fkey",
    ),
    (
        "account_replication_keys",
        "account_replication_keys_key_id_check",
    ),
    ("account_replication_keys", "account_replication_keys_pkey"),
    (
        "account_replication_keys",
        "account_replication_keys_version_check",
    ),
    ("accounts", "accounts_id_check"),
    ("accounts", "accounts_pkey"),
    ("accounts", "accounts_secret_count_check"),
    ("accounts", "accounts_secrets_quota_check"),
    ("audit", "audit_account_id_check"),
    ("audit", "audit_actor_token_check"),
    ("audit", "audit_hash_check"),
    ("audit", "audit_pkey"),
    ("audit", "audit_prev_hash_check"),
    ("audit", "audit_secret_id_check"),
    ("audit", "audit_seq_check"),
    ("audit", "audit_store_id_check"),
    ("audit_checkpoints", "audit_checkpoints_account_id_check"),
    ("audit_checkpoints", "audit_checkpoints_hash_check"),
    ("audit_checkpoints", "audit_checkpoints_pkey"),
    ("audit_checkpoints", "audit_checkpoints_seq_check"),
    ("change_head", "change_head_hash_check"),
    ("change_head", "change_head_id_check"),
    ("change_head", "change_head_pkey"),
    ("change_head", "change_head_seq_check"),
    ("change_signatures", "change_signatures_pkey"),
    ("change_signatures", "change_signatures_seq_check"),
    ("change_signatures", "change_signatures_signature_check"),
    ("changes", "changes_hash_check"),
    ("changes", "changes_pkey"),
    ("changes", "changes_seq_check"),
    ("coffer_schema_version", "coffer_schema_version_id_check"),
    ("coffer_schema_version", "coffer_schema_version_pkey"),
    (
        "coffer_schema_version",
        "coffer_schema_version_version_check",
    ),
    ("deks", "deks_account_id_fkey"),
    ("deks", "deks_id_check"),
    ("deks", "deks_pkey"),
    ("deks", "deks_rk_version_check"),
    ("destroyed_deks", "destroyed_deks_id_check"),
    ("destroyed_deks", "destroyed_deks_pkey"),
    ("instance_keys", "instance_keys_key_id_check"),
    ("instance_keys", "instance_keys_pkey"),
    ("instance_keys", "instance_keys_rk_version_check"),
    ("node_grants", "node_grants_ephemeral_check"),
    ("node_grants", "node_grants_node_id_check"),
    ("node_grants", "node_grants_pkey"),
    ("node_grants", "node_grants_rk_version_check"),
    ("nodes", "nodes_hash_check"),
    ("nodes", "nodes_id_check"),
    ("nodes", "nodes_pkey"),
    ("nodes", "nodes_public_key_check"),
    ("outbox", "outbox_id_check"),
    ("outbox", "outbox_pkey"),
    ("replication", "replication_base_hash_check"),
    ("replication", "replication_base_seq_check"),
    ("replication", "replication_cluster_id_check"),
    ("replication", "replication_id_check"),
    ("replication", "replication_pkey"),
    ("retired_keks", "retired_keks_pkey"),
    ("secrets", "secrets_id_check"),
    ("secrets", "secrets_name_unique"),
    ("secrets", "secrets_pkey"),
    ("secrets", "secrets_scopes_check"),
    ("secrets", "secrets_store_id_account_id_fkey"),
    ("secrets", "secrets_version_check"),
    ("service_bindings", "service_bindings_pkey"),
    ("service_bindings", "service_bindings_position_check"),
    (
        "service_bindings",
        "service_bindings_service_id_binding_key",
    ),
    ("service_bindings", "service_bindings_service_id_fkey"),
    ("service_bindings", "service_bindings_store_id_check"),
    ("service_tokens", "service_tokens_hash_check"),
    ("service_tokens", "service_tokens_id_check"),
    ("service_tokens", "service_tokens_pkey"),
    (
        "service_tokens",
        "service_tokens_service_id_account_id_fkey",
    ),
    ("services", "services_account_id_fkey"),
    ("services", "services_id_account"),
    ("services", "services_id_check"),
    ("services", "services_name_unique"),
    ("services", "services_pkey"),
    ("stores", "stores_account_id_fkey"),
    ("stores", "stores_id_account"),
    ("stores", "stores_id_check"),
    ("stores", "stores_name_unique"),
    ("stores", "stores_pkey"),
    ("stores", "stores_secret_count_check"),
    ("tokens", "tokens_account_id_fkey"),
    ("tokens", "tokens_hash_check"),
    ("tokens", "tokens_id_check"),
    ("tokens", "tokens_pkey"),
    ("versions", "versions_dek_id_fkey"),
    ("versions", "versions_pkey"),
    ("versions", "versions_secret_id_fkey"),
    ("versions", "versions_version_check"),
];

/// The columns of every primary key and unique constraint the migrations make, as (table,
/// constraint, its columns in key order), for this schema version. Checked beside the names:
/// a key re-made under its own name on other columns (`stores_pkey` on (id, account_id), say)
/// would let two accounts hold one store id, and a list by store id show both.
pub(crate) const KEYS: &[(&str, &str, &str)] = &[
    ("access_batches", "access_batches_pkey", "id"),
    (
        "account_grants",
        "account_grants_pkey",
        "account_id,node_id,ark_version",
    ),
    (
        "account_node_keys",
        "account_node_keys_pkey",
        "account_id,node_id",
    ),
    (
        "account_node_keys",
        "account_node_keys_public_key_key",
        "public_key",
    ),
    (
        "account_replication_keys",
        "account_replication_keys_pkey",
        "account_id,version",
    ),
    ("accounts", "accounts_pkey", "id"),
    ("audit", "audit_pkey", "account_id,seq"),
    (
        "audit_checkpoints",
        "audit_checkpoints_pkey",
        "account_id,seq",
    ),
    ("change_head", "change_head_pkey", "id"),
    ("change_signatures", "change_signatures_pkey", "seq"),
    ("changes", "changes_pkey", "seq"),
    ("coffer_schema_version", "coffer_schema_version_pkey", "id"),
    ("deks", "deks_pkey", "id"),
    ("destroyed_deks", "destroyed_deks_pkey", "id"),
    ("instance_keys", "instance_keys_pkey", "purpose"),
    ("node_grants", "node_grants_pkey", "node_id,rk_version"),
    ("nodes", "nodes_pkey", "id"),
    ("outbox", "outbox_pkey", "id"),
    ("replication", "replication_pkey", "id"),
    ("retired_keks", "retired_keks_pkey", "kek_id"),
    ("secrets", "secrets_name_unique", "store_id,name"),
    ("secrets", "secrets_pkey", "id"),
    (
        "service_bindings",
        "service_bindings_pkey",
        "service_id,position",
    ),
    (
        "service_bindings",
        "service_bindings_service_id_binding_key",
        "service_id,binding",
    ),
    ("service_tokens", "service_tokens_pkey", "id"),
    ("services", "services_id_account", "id,account_id"),
    ("services", "services_name_unique", "account_id,name"),
    ("services", "services_pkey", "id"),
    ("stores", "stores_id_account", "id,account_id"),
    ("stores", "stores_name_unique", "account_id,name"),
    ("stores", "stores_pkey", "id"),
    ("tokens", "tokens_pkey", "id"),
    ("versions", "versions_pkey", "secret_id,version"),
];

/// Every trigger of Coffer's own (not the foreign keys' internal ones) the migrations make,
/// as (table, trigger), for this schema version.
pub(crate) const TRIGGERS: &[(&str, &str)] = &[
    ("audit", "audit_no_delete"),
    ("audit", "audit_no_truncate"),
    ("audit", "audit_no_update"),
    ("audit_checkpoints", "audit_checkpoints_no_delete"),
    ("audit_checkpoints", "audit_checkpoints_no_truncate"),
    ("audit_checkpoints", "audit_checkpoints_no_update"),
    ("changes", "changes_no_delete"),
    ("changes", "changes_no_truncate"),
    ("changes", "changes_no_update"),
    ("secrets", "secrets_count_delete"),
    ("secrets", "secrets_count_insert"),
    ("secrets", "secrets_no_truncate"),
    ("secrets", "secrets_owner_fixed"),
    ("versions", "versions_immutable"),
];

/// Coffer's own functions (what its triggers call), as (name, MD5 of the body as the
/// migrations wrote it, which PostgreSQL keeps verbatim), for this schema version: a trigger
/// present and enabled does nothing of its own if its function was replaced (`CREATE OR
/// REPLACE FUNCTION coffer_refuse() ... RETURN NEW` would open every append-only table).
pub(crate) const FUNCTIONS: &[(&str, &str)] = &[
    (
        "coffer_changes_no_delete",
        "7525a5bc2058dab45c65685e28511972",
    ),
    ("coffer_refuse", "054bcd10660f443da439c7fe5cad588e"),
    (
        "coffer_secrets_count_delete",
        "65881ced7c384e8ec8cb36b31fad0fca",
    ),
    (
        "coffer_secrets_count_insert",
        "0bdcb0638a2b8df1da0aa09f8be98e77",
    ),
];

/// The function each of Coffer's triggers calls, as (table, trigger, function), for this
/// schema version.
pub(crate) const TRIGGER_FUNCTIONS: &[(&str, &str, &str)] = &[
    ("audit", "audit_no_delete", "coffer_refuse"),
    ("audit", "audit_no_truncate", "coffer_refuse"),
    ("audit", "audit_no_update", "coffer_refuse"),
    (
        "audit_checkpoints",
        "audit_checkpoints_no_delete",
        "coffer_refuse",
    ),
    (
        "audit_checkpoints",
        "audit_checkpoints_no_truncate",
        "coffer_refuse",
    ),
    (
        "audit_checkpoints",
        "audit_checkpoints_no_update",
        "coffer_refuse",
    ),
    ("changes", "changes_no_delete", "coffer_changes_no_delete"),
    ("changes", "changes_no_truncate", "coffer_refuse"),
    ("changes", "changes_no_update", "coffer_refuse"),
    (
        "secrets",
        "secrets_count_delete",
        "coffer_secrets_count_delete",
    ),
    (
        "secrets",
        "secrets_count_insert",
        "coffer_secrets_count_insert",
    ),
    ("secrets", "secrets_no_truncate", "coffer_refuse"),
    ("secrets", "secrets_owner_fixed", "coffer_refuse"),
    ("versions", "versions_immutable", "coffer_refuse"),
];
