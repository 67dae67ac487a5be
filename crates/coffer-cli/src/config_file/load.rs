//! Reading a config file: TOML, then the kind's schema (unknown keys and wrong types refused
//! with their place in the file), then a flat list of (key, value).

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};

use super::Kind;
use super::keys::Key;
use super::schema::{SECRET_KEYS, looks_like_secret};

/// A config file that parsed and matched its kind's schema.
#[derive(Debug)]
pub struct Loaded {
    /// Every key the file sets, in the schema's order.
    pub entries: Vec<Entry>,
}

/// One key the file sets.
#[derive(Debug)]
pub struct Entry {
    pub key: Key,
    pub value: toml::Value,
    /// Where the key is written: `line L, column C`.
    pub place: String,
}

/// Reads and parses the file at `path`; the error is one line, without the file's name.
pub fn load(kind: Kind, path: &Path) -> Result<Loaded, String> {
    refuse_if_writable_by_others(path)?;
    let text = crate::config::read(path)?;
    parse(kind, &text)
}

/// Refuses a file its group or others may write: whoever can write it could point an edge at
/// an upstream of their own and collect its node token, or turn TLS off, so it must be the
/// owner's alone (as a PKCS#11 module must be). Links are followed, as when it is read.
fn refuse_if_writable_by_others(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        // `read` says why it cannot be read.
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o777;
    if meta.is_file() && mode & 0o022 != 0 {
        return Err(format!(
            "has mode {mode:03o}, which lets group or others write it (and so redirect an edge's upstream and collect its token); restrict it with `chmod go-w {}`",
            path.display()
        ));
    }
    Ok(())
}

/// Parses `text` as a `kind` file.
pub fn parse(kind: Kind, text: &str) -> Result<Loaded, String> {
    let table = match kind {
        Kind::Server => typed::<super::schema::ServerFile>(kind, text),
        Kind::Edge => typed::<super::schema::EdgeFile>(kind, text),
        Kind::Dev => typed::<super::schema::DevFile>(kind, text),
    }?;
    let mut keys = Vec::new();
    for (name, value) in table {
        match value {
            toml::Value::Table(inner) => {
                for (inner_name, value) in inner {
                    keys.push((Key::in_table(&name, &inner_name), value));
                }
            }
            value => keys.push((Key::top(&name), value)),
        }
    }
    // Parsed again for the keys' places: the schema's table keeps none, and the text is small.
    let spans = DeTable::parse(text)
        .map(|t| t.into_inner())
        .unwrap_or_default();
    let entries = keys
        .into_iter()
        .map(|(key, value)| Entry {
            place: crate::config::place(text, offset_of(&spans, &key).unwrap_or(0)),
            key,
            value,
        })
        .collect();
    Ok(Loaded { entries })
}

/// The byte offset at which `key` is written.
fn offset_of(document: &DeTable<'_>, key: &Key) -> Option<usize> {
    match &key.table {
        None => entry(document, &key.name).map(|(at, _)| at),
        Some(table) => match entry(document, table)? {
            (_, DeValue::Table(inner)) => entry(inner, &key.name).map(|(at, _)| at),
            _ => None,
        },
    }
}

/// The offset and value of `name` in `table`.
fn entry<'a, 'i>(table: &'a DeTable<'i>, name: &str) -> Option<(usize, &'a DeValue<'i>)> {
    table
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == name)
        .map(|(k, v)| (k.span().start, v.get_ref()))
}

/// Deserializes `text` into the schema `T`, and back into a table holding only what was set.
fn typed<T: DeserializeOwned + Serialize>(kind: Kind, text: &str) -> Result<toml::Table, String> {
    let document = toml::Deserializer::parse(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        crate::config::at(text, offset, &format!("not TOML: {}", e.message()))
    })?;
    if let Ok(table) = DeTable::parse(text) {
        refuse_secrets(text, None, table.get_ref())?;
    }
    let typed: T = serde_path_to_error::deserialize(document).map_err(|e| {
        let offset = e.inner().span().map_or(0, |s| s.start);
        let message = explain(kind, e.path(), e.inner().message());
        crate::config::at(text, offset, &message)
    })?;
    toml::Table::try_from(&typed).map_err(|e| format!("cannot read it back: {e}"))
}

/// Refuses any string value, under any key, that looks like a secret (a token, a PEM block),
/// with the key and the value's place but not the value: a secret pasted into the wrong key
/// (a path, an address) would otherwise be repeated in the error, and so in the journal.
fn refuse_secrets(text: &str, table: Option<&str>, document: &DeTable<'_>) -> Result<(), String> {
    for (name, value) in document.iter() {
        let name = name.get_ref().as_ref();
        if SECRET_KEYS.iter().any(|(secret, _)| *secret == name) {
            // Refused by the schema, with what to use instead.
            continue;
        }
        let key = match table {
            Some(t) => Key::in_table(t, name),
            None => Key::top(name),
        };
        let values = match value.get_ref() {
            DeValue::Table(inner) if table.is_none() => {
                refuse_secrets(text, Some(name), inner)?;
                continue;
            }
            DeValue::Array(items) => items.iter().collect(),
            _ => vec![value],
        };
        for value in values {
            if let DeValue::String(s) = value.get_ref()
                && database_url_has_password(s)
            {
                return Err(crate::config::at(
                    text,
                    value.span().start,
                    &format!(
                        "key `{key}`: the database URL holds a password, which is refused and not repeated here: secrets are never read from a config file; give the password in PGPASSWORD or a file named by database.password-file (mode 0600)"
                    ),
                ));
            }
            if let DeValue::String(s) = value.get_ref()
                && let Some(what) = looks_like_secret(s)
            {
                return Err(crate::config::at(
                    text,
                    value.span().start,
                    &format!(
                        "key `{key}`: its value looks like {what}, which is refused and not repeated here: secrets are never read from a config file (name the file that holds it instead)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Whether `text` is a `postgres://` URL with a password: `USER:PASSWORD@` (the user
/// information runs to the last '@', as coffer-postgres splits it, so a password holding '/',
/// '?' or '@' counts) or a `password=` parameter.
pub(crate) fn database_url_has_password(text: &str) -> bool {
    let text = text.trim();
    let Some(rest) = text
        .strip_prefix("postgres://")
        .or_else(|| text.strip_prefix("postgresql://"))
    else {
        return false;
    };
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((userinfo, rest)) => (userinfo, rest),
        None => ("", rest),
    };
    let query = rest.split_once('?').map_or("", |(_, q)| q);
    userinfo.contains(':')
        || query.split('&').any(|pair| {
            pair.split_once('=')
                .map_or(pair, |(key, _)| key)
                .eq_ignore_ascii_case("password")
        })
}

/// serde's message about the value at `path`, in the file's terms: an unknown key with the
/// nearest one (or where it belongs), a secret with what to use instead, a wrong type with the
/// key and the TOML type expected.
fn explain(kind: Kind, path: &serde_path_to_error::Path, message: &str) -> String {
    let segments: Vec<String> = path
        .iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            _ => None,
        })
        .collect();
    if let Some(unknown) = unknown_field(message) {
        // The path ends with the unknown key itself, or stops at its table.
        let table = segments.first().filter(|t| **t != unknown).cloned();
        return unknown_key(kind, table.as_deref(), &unknown);
    }
    let key = match segments.as_slice() {
        [] => return message.to_owned(),
        [name] => Key::top(name),
        [table, name, ..] => Key::in_table(table, name),
    };
    format!("key `{key}`: {}", toml_types(&clip_string(message)))
}

/// serde's message with the string it quotes (`invalid type: string "...", expected ...`)
/// cut to [`super::ECHO_MAX_CHARS`].
fn clip_string(message: &str) -> String {
    const OPEN: &str = "string \"";
    let (Some(start), Some(end)) = (message.find(OPEN), message.rfind("\", expected")) else {
        return message.to_owned();
    };
    let start = start + OPEN.len();
    if end < start {
        return message.to_owned();
    }
    format!(
        "{}{}{}",
        &message[..start],
        super::echo(&message[start..end]),
        &message[end..]
    )
}

/// The key serde's "unknown field `x`, expected ..." names.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_owned())
}

/// Why `name` (in `[table]`, or at the top) is refused, and what was probably meant.
pub fn unknown_key(kind: Kind, table: Option<&str>, name: &str) -> String {
    let here = match table {
        Some(t) => Key::in_table(t, name),
        None => Key::top(name),
    };
    if let Some((_, instead)) = SECRET_KEYS.iter().find(|(secret, _)| *secret == name) {
        return format!(
            "key `{here}` is refused: secrets are never read from a config file (config files get committed and copied); {instead}"
        );
    }
    let keys = kind.keys();
    // The same name in another table, or at the top.
    if let Some(elsewhere) = keys.iter().find(|k| k.name == name) {
        let place = match &elsewhere.table {
            Some(t) => format!("in [{t}]"),
            None => "at the top of the file, before any [table]".to_owned(),
        };
        return format!(
            "unknown key `{here}` in a {} file: `{name}` belongs {place}",
            kind.name()
        );
    }
    // What may stand here: the table's keys, and at the top the tables too.
    let mut candidates: Vec<String> = keys
        .iter()
        .filter(|k| k.table.as_deref() == table)
        .map(|k| k.name.clone())
        .collect();
    if table.is_none() {
        for t in keys.iter().filter_map(|k| k.table.as_deref()) {
            if !candidates.iter().any(|c| c == t) {
                candidates.push(t.to_owned());
            }
        }
    }
    // As clap suggests flags: the closest by Jaro similarity, if close enough.
    let nearest = candidates
        .iter()
        .map(|c| (strsim::jaro(name, c), c))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let kind = kind.name();
    match (nearest, table) {
        (Some((_, c)), Some(t)) => {
            format!("unknown key `{here}` in a {kind} file; did you mean `{t}.{c}`?")
        }
        (Some((_, c)), None) => {
            format!("unknown key `{here}` in a {kind} file; did you mean `{c}`?")
        }
        (None, Some(t)) => format!(
            "unknown key `{here}` in a {kind} file (keys in [{t}]: {})",
            candidates.join(", ")
        ),
        (None, None) => format!(
            "unknown key `{here}` in a {kind} file (keys and tables at the top: {})",
            candidates.join(", ")
        ),
    }
}

/// serde's Rust type names in a type error, as the TOML types a file writer knows.
fn toml_types(message: &str) -> String {
    let mut out = message.to_owned();
    for (rust, toml) in [
        ("expected u64", "expected a non-negative integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected path string", "expected a string (a path)"),
        ("expected a sequence", "expected an array"),
        ("expected a boolean", "expected true or false"),
    ] {
        out = out.replace(rust, toml);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::database_url_has_password;

    #[test]
    fn a_database_password_is_found_wherever_the_url_puts_it() {
        for with in [
            "postgres://coffer:pw@db/coffer",
            "postgresql://coffer:p/w?x@db/coffer",
            "postgres://coffer:p@w@db/coffer?sslmode=verify-full",
            "postgres://coffer@db/coffer?password=pw",
            "postgres://coffer@db/coffer?sslmode=require&PASSWORD=pw",
        ] {
            assert!(database_url_has_password(with), "{with}");
        }
        for without in [
            "postgres://coffer@db/coffer",
            "postgres://coffer@db:5432/coffer?sslmode=verify-full&sslrootcert=/ca.pem",
            "postgres://db/coffer",
        ] {
            assert!(!database_url_has_password(without), "{without}");
        }
    }
}
