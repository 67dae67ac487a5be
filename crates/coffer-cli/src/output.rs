//! How results are shown: tables for people, JSON for programs.
//!
//! `--json` prints the API's `result`: an object for one item, the array for `secret create`,
//! `{"result": [...], "result_info": {...}}` for lists (so that scripts can page), and `null`
//! for deletes; a new token is also `token`, whatever its kind. Tables fit 100 columns unless
//! `--wide` (see `table`).

use std::io::Write;

use coffer_client::{Page, ResultInfo, SecretValue};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::args::ConnArgs;
use crate::table::one_line;

mod accounts;
mod audit;
mod kek;
mod nodes;
mod services;
mod stores;
mod tokens;
mod whoami;

pub use accounts::{account, account_created, account_list, quota};
pub use audit::{audit_list, audit_verification};
pub use kek::{account_kek, kek_rotated, kek_status};
pub use nodes::{node_created, node_list, node_revoked};
pub use services::{
    service, service_deployed, service_list, service_token_list, service_token_revoked,
    service_token_rotated, service_tokens_revoked,
};
pub use stores::{secret, secret_list, secret_with_binders, secrets_created, store, store_list};
pub use tokens::{token, token_created, token_list, token_revoked};
pub use whoami::whoami;

/// How a result is shown: a table that fits 100 columns, every column (`--wide`), or the API's
/// JSON (`--json`, which wins over `--wide`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Wide,
    Json,
}

impl Format {
    pub fn of(conn: &ConnArgs) -> Format {
        match (conn.json, conn.wide) {
            (true, _) => Format::Json,
            (false, true) => Format::Wide,
            (false, false) => Format::Table,
        }
    }

    pub fn json(self) -> bool {
        self == Format::Json
    }

    fn wide(self) -> bool {
        self == Format::Wide
    }
}

/// An optional time to the second, or `none` for its absence.
fn time_or(at: Option<&str>, none: &str) -> String {
    at.map_or_else(|| none.to_owned(), time)
}

/// An RFC 3339 time to the second, in UTC as the server wrote it: `2025-01-31T23:30:00Z`
/// (fractions of a second dropped). Anything else is shown as it came, made safe.
pub fn time(at: &str) -> String {
    use coffer_types::Timestamp;
    match Timestamp::parse_rfc3339(at) {
        Some(t) => {
            let micros = t.unix_micros();
            Timestamp::from_unix_micros(micros - micros.rem_euclid(1_000_000)).to_rfc3339()
        }
        None => one_line(at),
    }
}

/// Writes `text` to standard output. Errors (a closed pipe) are returned, not panicked on.
pub fn print(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Pretty JSON and a newline.
pub fn json_text<T: Serialize + ?Sized>(value: &T) -> String {
    // Serializing these types cannot fail: they are plain structs of strings, numbers and
    // vectors, with no maps keyed by non-strings.
    let mut s = serde_json::to_string_pretty(value).unwrap_or_default();
    s.push('\n');
    s
}

/// The `--json` form of a result holding a new token (API, service or node token): the API's
/// result as it came, where the token has the name the API gives that kind (`value`,
/// `service_token`, `node_token`, kept for the scripts that read them), and the token once more
/// as `token`, the one name for every kind.
#[derive(Serialize)]
struct WithToken<'a, T> {
    #[serde(flatten)]
    result: &'a T,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a SecretValue>,
}

/// [`WithToken`] as text, zeroized on drop.
fn with_token<T: Serialize>(result: &T, token: Option<&SecretValue>) -> Zeroizing<String> {
    // Written into one buffer large enough from the start, so that no reallocation leaves an
    // unwiped copy of the token behind.
    let mut buf = Zeroizing::new(Vec::with_capacity(TOKEN_OUTPUT_CAPACITY));
    // Serializing these types cannot fail (see `json_text`).
    let _ = serde_json::to_writer_pretty(&mut *buf, &WithToken { result, token });
    buf.push(b'\n');
    // serde_json writes UTF-8; the bytes move into the String without a copy.
    Zeroizing::new(String::from_utf8(std::mem::take(&mut *buf)).unwrap_or_default())
}

/// Room for a created token's output (its metadata and value are a few hundred bytes).
const TOKEN_OUTPUT_CAPACITY: usize = 8 << 10;

/// The `--json` form of a list.
#[derive(Serialize)]
struct ListJson<'a, T> {
    result: &'a [T],
    result_info: &'a ResultInfo,
}

/// `page 1 of 3 (10 per page, 25 secrets in all)`.
fn page_footer<T>(page: &Page<T>, noun: &str) -> String {
    let noun = if page.result_info.total_count == 1 {
        match noun.strip_suffix("ies") {
            Some(stem) => format!("{stem}y"),
            None => noun.trim_end_matches('s').to_owned(),
        }
    } else {
        noun.to_owned()
    };
    let info = &page.result_info;
    let pages = if info.per_page == 0 {
        1
    } else {
        info.total_count.div_ceil(u64::from(info.per_page)).max(1)
    };
    format!(
        "page {} of {pages} ({} per page, {} {noun} in all)\n",
        info.page, info.per_page, info.total_count
    )
}

fn page_json<T: Serialize>(page: &Page<T>) -> String {
    json_text(&ListJson {
        result: &page.items,
        result_info: &page.result_info,
    })
}

/// A delete's confirmation, or `null` under `--json`.
pub fn deleted(message: &str, format: Format) -> String {
    if format.json() {
        "null\n".to_owned()
    } else {
        format!("{message}\n")
    }
}

#[cfg(test)]
mod tests {
    use coffer_client::{Quota, QuotaDetail, ResultInfo};

    use super::*;

    pub(super) fn page<T>(items: Vec<T>, total: u64) -> Page<T> {
        Page {
            result_info: ResultInfo {
                page: 1,
                per_page: 10,
                count: items.len() as u64,
                total_count: total,
            },
            items,
        }
    }

    #[test]
    fn quota_and_deletes() {
        let q = Quota {
            secrets: QuotaDetail {
                quota: 100,
                usage: 3,
            },
        };
        assert_eq!(
            quota(&q, Format::Table),
            "secrets: 3 used of 100 (97 left)\n"
        );
        let v: serde_json::Value = serde_json::from_str(&quota(&q, Format::Json)).unwrap();
        assert_eq!(v["secrets"]["usage"], 3);
        assert_eq!(deleted("Deleted.", Format::Json), "null\n");
        assert_eq!(deleted("Deleted.", Format::Table), "Deleted.\n");
    }
}
