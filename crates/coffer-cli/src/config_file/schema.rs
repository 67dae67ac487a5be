//! What each kind of config file may hold: one serde struct per command, with a table struct
//! per `[table]`. These types are the schema and nothing more: a file is deserialized into one
//! of them (so an unknown key or a wrong type is refused by serde, with its place in the file),
//! then serialized back into a plain table, which `merge` turns into the command's flags.
//!
//! A key is the long flag's name (kebab-case). In a table, a flag that begins with the table's
//! name loses it: `[tls] cert` is `--tls-cert`, `[kek] rewrap-rate` is `--kek-rewrap-rate`,
//! while `[limits] max-connections` is `--max-connections`. A new flag is one new field here
//! (the test `every_flag_has_a_key_and_every_key_a_flag` fails until it has one), and one line in
//! docs/configuration.md.
//!
//! Values keep the TOML type the flag's value suggests (integers for counts and seconds,
//! booleans for switches, strings for addresses and paths, arrays for repeatable flags); the
//! value itself is checked by the flag's own parser, so the file and the flag accept the same.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `coffer server --config FILE`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerFile {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    metrics_listen: Option<String>,
    insecure_http: Option<bool>,
    dashboard_secure_cookies: Option<String>,
    secrets_quota: Option<u64>,
    max_stores: Option<u64>,
    feed_retention: Option<u64>,
    dek_max_seals: Option<u64>,
    keep_versions: Option<u64>,
    reseal_rate: Option<u64>,
    trusted_proxy: Option<Vec<String>>,
    client_ip_header: Option<String>,
    tls: Option<ServerTls>,
    kek: Option<Kek>,
    database: Option<DatabaseTable>,
    limits: Option<Limits>,
    log: Option<Log>,
}

/// `coffer edge --config FILE`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EdgeFile {
    upstream: Option<Vec<String>>,
    node_token_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    metrics_listen: Option<String>,
    insecure_http: Option<bool>,
    insecure_http_upstream: Option<bool>,
    feed_key: Option<String>,
    serve_feed: Option<bool>,
    staleness: Option<u64>,
    max_staleness: Option<u64>,
    trusted_proxy: Option<Vec<String>>,
    client_ip_header: Option<String>,
    tls: Option<EdgeTls>,
    limits: Option<Limits>,
    log: Option<Log>,
}

/// `coffer dev --config FILE`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DevFile {
    data_dir: Option<PathBuf>,
    listen: Option<String>,
    metrics_listen: Option<String>,
    log: Option<Log>,
}

/// `[tls]` of a server: the certificate it serves.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ServerTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// `[tls]` of an edge: the certificate it serves, and the CA it trusts for upstreams.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct EdgeTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca_cert: Option<PathBuf>,
}

/// `[kek]`: the pace of the rewrap after a KEK rotation. Which KEK (a key file or a PKCS#11
/// key) is the data dir's own setting (`kek.toml`), and the PIN is never in a config file.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Kek {
    rewrap_rate: Option<u64>,
    retire_grace: Option<u64>,
}

/// `[database]`: the PostgreSQL database of an instance made with `coffer init --database-url`.
/// A URL holding a password is refused (PGPASSWORD or `password-file` instead).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct DatabaseTable {
    url: Option<String>,
    password_file: Option<PathBuf>,
    connect_timeout: Option<u64>,
}

/// `[limits]`: what one client may cost.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Limits {
    max_connections: Option<u64>,
    max_connections_per_address: Option<u64>,
    header_timeout: Option<u64>,
    runtime_rate_limit: Option<u64>,
    snapshot_deadline: Option<u64>,
}

/// `[log]`: what is logged (`level`, `access-log`) and how (`format`).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Log {
    level: Option<String>,
    format: Option<String>,
    access_log: Option<bool>,
}

/// Where a PKCS#11 PIN comes from instead.
const PIN_INSTEAD: &str =
    "the PKCS#11 PIN comes from COFFER_PKCS11_PIN or the KEK URI's pin-source=file:/path";

/// Keys refused whatever the kind of file, with what to use instead: config files get
/// committed, copied and shown around, so a secret is never read from one.
pub const SECRET_KEYS: &[(&str, &str)] = &[
    (
        "node-token",
        "give node-token-file = \"/path/to/file\" (mode 0600) or COFFER_NODE_TOKEN",
    ),
    (
        "api-token",
        "give it as COFFER_API_TOKEN to the commands that take one",
    ),
    ("pin", PIN_INSTEAD),
    ("pkcs11-pin", PIN_INSTEAD),
];

/// Keys naming a file of key material or a token: their value is never repeated in a message,
/// since the secret itself may have been pasted in place of its path.
pub const SECRET_PATH_KEYS: &[&str] = &["tls.key", "node-token-file", "database.password-file"];

/// What `text` (any string value of a config file, or a path given for a secret file) looks
/// like if it looks like a secret: a Coffer token (its prefix, then the hex of its id: a path
/// such as `coffer_data` is not one) or a PEM block. Such a value is refused without being
/// repeated.
pub fn looks_like_secret(text: &str) -> Option<&'static str> {
    let text = text.trim_start();
    let token = ["coffer_", "coffersvc_", "coffernode_"]
        .iter()
        .any(|prefix| {
            text.strip_prefix(prefix).is_some_and(|rest| {
                rest.len() >= 8 && rest.bytes().take(8).all(|b| b.is_ascii_hexdigit())
            })
        });
    if token {
        return Some("a Coffer token");
    }
    if text.contains("-----BEGIN") {
        return Some("a PEM block (a key or certificate itself)");
    }
    None
}
