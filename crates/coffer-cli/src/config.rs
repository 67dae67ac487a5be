//! The configuration `coffer deploy` reads: the keys of a wrangler.toml, wrangler.jsonc or
//! wrangler.json that Coffer uses (`name`, `type`, `secrets_store_secrets`,
//! `secrets_store_stores`); every other key is ignored, so one file serves both wrangler and
//! Coffer.
//!
//! Checks follow wrangler's (`validateSecretsStoreSecretBinding`, `validateBindingArray`,
//! `validateAdditionalProperties`, `validateBindingsHaveUniqueNames`), with wrangler's messages,
//! then Coffer's own: binding names are environment variable names, store ids are ids, secret
//! and service names are names, the type is a scope. Every problem is collected, so that one run
//! shows them all.

use std::io::Read;
use std::path::Path;

use coffer_api::{DeployService, SecretBinding, StoreBinding};
use coffer_types::{BindingName, Scope, SecretName, ServiceName, StoreId};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Longest rendering of a value repeated in a message, in characters.
const ECHO_MAX_CHARS: usize = 200;

/// The file formats `coffer deploy` reads, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    /// JSON with comments and trailing commas (`.jsonc` and `.json`, as wrangler reads both).
    Jsonc,
}

impl Format {
    pub fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "toml" => Some(Format::Toml),
            "json" | "jsonc" => Some(Format::Jsonc),
            _ => None,
        }
    }
}

/// A configuration that passed every check.
#[derive(Debug)]
pub struct Config {
    pub deploy: DeployService,
    /// Wrangler's warnings (unexpected fields), to show but not to stop on.
    pub warnings: Vec<String>,
}

/// Why a configuration cannot be deployed: each problem is one line, without the file name.
#[derive(Debug, PartialEq, Eq)]
pub struct Problems {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

/// Reads and checks the file at `path`.
pub fn load(path: &Path) -> Result<Config, Problems> {
    let only = |problem: String| Problems {
        problems: vec![problem],
        warnings: vec![],
    };
    let Some(format) = Format::of(path) else {
        return Err(only(
            "unknown configuration format: expected a wrangler.toml (.toml), wrangler.jsonc \
             (.jsonc) or wrangler.json (.json) file"
                .to_owned(),
        ));
    };
    let text = read(path).map_err(only)?;
    parse(&text, format)
}

/// The largest configuration file read: far more than any wrangler file needs, and little
/// enough that a path to something else (a device, a log) is refused rather than read.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The text of the regular file at `path`, at most [`MAX_CONFIG_BYTES`]; otherwise the problem,
/// phrased to follow the file's name.
pub(crate) fn read(path: &Path) -> Result<String, String> {
    let cannot = |e: std::io::Error| format!("cannot read it: {e}");
    // Checked before opening, since opening a FIFO waits for a writer; and again once open, in
    // case the path was replaced in between.
    is_regular(&std::fs::metadata(path).map_err(cannot)?)?;
    let file = std::fs::File::open(path).map_err(cannot)?;
    is_regular(&file.metadata().map_err(cannot)?)?;
    let text = std::io::read_to_string(file.take(MAX_CONFIG_BYTES + 1)).map_err(cannot)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    Ok(text)
}

/// A regular file of at most [`MAX_CONFIG_BYTES`] (symbolic links are followed).
fn is_regular(meta: &std::fs::Metadata) -> Result<(), String> {
    if meta.is_dir() {
        return Err("is a directory, not a configuration file".to_owned());
    }
    if !meta.is_file() {
        return Err(
            "is not a regular file (a device, FIFO or socket): give the configuration file itself"
                .to_owned(),
        );
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    Ok(())
}

fn too_large() -> String {
    format!(
        "is larger than 1 MiB ({MAX_CONFIG_BYTES} bytes), the most a configuration file may hold"
    )
}

/// Parses `text` and checks it.
pub fn parse(text: &str, format: Format) -> Result<Config, Problems> {
    let root = match format {
        Format::Toml => parse_toml(text),
        Format::Jsonc => parse_jsonc(text),
    }
    .map_err(|problem| Problems {
        problems: vec![problem],
        warnings: vec![],
    })?;
    check(&root)
}

/// `text` cut to `max` characters, `…` marking the cut: how a value is repeated in a message.
pub(crate) fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// `line L, column C: message`, from a byte offset.
pub(crate) fn at(text: &str, offset: usize, message: &str) -> String {
    format!("{}: {}", place(text, offset), one_line(message))
}

/// `line L, column C` of a byte offset.
pub(crate) fn place(text: &str, offset: usize) -> String {
    let before = &text[..text.floor_char_boundary(offset.min(text.len()))];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("line {line}, column {column}")
}

fn one_line(message: &str) -> String {
    message
        .trim()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn parse_toml(text: &str) -> Result<Value, String> {
    toml::from_str::<Value>(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        format!("invalid TOML at {}", at(text, offset, e.message()))
    })
}

fn parse_jsonc(text: &str) -> Result<Value, String> {
    // What wrangler accepts: JSON plus comments and trailing commas, nothing looser.
    let options = jsonc_parser::ParseOptions {
        allow_comments: true,
        allow_trailing_commas: true,
        allow_loose_object_property_names: false,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        allow_bare_decimal_point_numbers: false,
        allow_non_finite_numbers: false,
        allow_extended_string_escapes: false,
    };
    jsonc_parser::parse_to_serde_value::<Value>(text, &options).map_err(|e| {
        format!(
            "invalid JSON at line {}, column {}: {}",
            e.line_display(),
            e.column_display(),
            one_line(&e.kind().to_string())
        )
    })
}

/// A parsed configuration value, keeping the keys of objects in document order (so that
/// messages show them as written, as `JSON.stringify` does in wrangler).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

/// The key under which the `toml` crate hands a date-time to a visitor.
const TOML_DATETIME_KEY: &str = "$__toml_private_datetime";

impl Value {
    /// The value of `key` in an object (the last one, if the key is repeated, as in
    /// `JSON.parse`).
    fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(entries) => entries.iter().rev().find(|(k, _)| k == key).map(|e| &e.1),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// `JSON.stringify(value)`, shortened to [`ECHO_MAX_CHARS`].
    fn echo(&self) -> String {
        let mut out = String::new();
        self.stringify(&mut out);
        clip(&out, ECHO_MAX_CHARS)
    }

    fn stringify(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => out.push_str(&i.to_string()),
            Value::Float(f) if !f.is_finite() => out.push_str("null"),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e21 => {
                out.push_str(&format!("{f:.0}"));
            }
            Value::Float(f) => out.push_str(&f.to_string()),
            Value::String(s) => out.push_str(&json_string(s)),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.stringify(out);
                }
                out.push(']');
            }
            Value::Object(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&json_string(k));
                    out.push(':');
                    v.stringify(out);
                }
                out.push('}');
            }
        }
    }
}

fn json_string(s: &str) -> String {
    // Serializing a string cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries: Vec<(String, Value)> = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            entries.push((key, value));
        }
        // A TOML date-time arrives as a one-key table; it is text as far as we are concerned.
        if let [(key, Value::String(s))] = entries.as_slice()
            && key == TOML_DATETIME_KEY
        {
            return Ok(Value::String(s.clone()));
        }
        Ok(Value::Object(entries))
    }
}

/// The two binding arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Secrets,
    Stores,
}

impl Kind {
    fn field(self) -> &'static str {
        match self {
            Kind::Secrets => "secrets_store_secrets",
            Kind::Stores => "secrets_store_stores",
        }
    }

    /// The name wrangler's duplicate-name messages use for the kind.
    fn friendly(self) -> &'static str {
        match self {
            Kind::Secrets => "Secrets Store Secret",
            Kind::Stores => "Secrets Store",
        }
    }

    fn required(self) -> &'static [&'static str] {
        match self {
            Kind::Secrets => &["binding", "store_id", "secret_name"],
            Kind::Stores => &["binding", "store_id"],
        }
    }
}

#[derive(Default)]
struct Report {
    problems: Vec<String>,
    warnings: Vec<String>,
}

/// Checks a parsed configuration.
pub fn check(root: &Value) -> Result<Config, Problems> {
    let mut report = Report::default();
    if !matches!(root, Value::Object(_)) {
        return Err(Problems {
            problems: vec![format!(
                "the configuration should be an object, but got {}",
                root.echo()
            )],
            warnings: vec![],
        });
    }
    let name = check_name(root.get("name"), &mut report);
    let kind = check_type(root.get("type"), &mut report);
    let mut names: Vec<(String, Kind)> = Vec::new();
    let secrets = check_array(
        root.get(Kind::Secrets.field()),
        Kind::Secrets,
        &mut report,
        &mut names,
    );
    let stores = check_array(
        root.get(Kind::Stores.field()),
        Kind::Stores,
        &mut report,
        &mut names,
    );
    check_unique(&names, &mut report);
    check_envs(root.get("env"), &mut report);

    match name {
        Some(name) if report.problems.is_empty() => Ok(Config {
            deploy: DeployService {
                name,
                kind,
                secrets_store_secrets: secrets
                    .into_iter()
                    .map(|b| SecretBinding {
                        binding: b.binding,
                        store_id: b.store_id,
                        secret_name: b.secret_name.unwrap_or_default(),
                    })
                    .collect(),
                secrets_store_stores: stores
                    .into_iter()
                    .map(|b| StoreBinding {
                        binding: b.binding,
                        store_id: b.store_id,
                    })
                    .collect(),
            },
            warnings: report.warnings,
        }),
        _ => Err(Problems {
            problems: report.problems,
            warnings: report.warnings,
        }),
    }
}

fn check_name(value: Option<&Value>, report: &mut Report) -> Option<String> {
    match value {
        None => {
            report.problems.push(
                "the configuration has no \"name\": give the service's name (letters, digits, \
                 '-' and '_', at most 63 characters)"
                    .to_owned(),
            );
            None
        }
        Some(Value::String(s)) => match ServiceName::parse(s) {
            Ok(name) => Some(name.into_string()),
            Err(e) => {
                report.problems.push(format!(
                    "\"name\" {} is not a valid service name: it {e}",
                    Value::String(s.clone()).echo()
                ));
                None
            }
        },
        Some(other) => {
            report.problems.push(format!(
                "Expected \"name\" to be of type string but got {}.",
                other.echo()
            ));
            None
        }
    }
}

fn check_type(value: Option<&Value>, report: &mut Report) -> Option<String> {
    match value {
        None => None,
        Some(Value::String(s)) => match Scope::parse(s) {
            Ok(scope) => Some(scope.as_str().to_owned()),
            Err(_) => {
                let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                report.problems.push(format!(
                    "\"type\" should be one of {} but got {}.",
                    known.join(", "),
                    Value::String(s.clone()).echo()
                ));
                None
            }
        },
        Some(other) => {
            report.problems.push(format!(
                "Expected \"type\" to be of type string but got {}.",
                other.echo()
            ));
            None
        }
    }
}

/// One binding whose fields all checked out.
struct Checked {
    binding: String,
    store_id: String,
    secret_name: Option<String>,
}

/// `validateBindingArray` and the per-binding check of one array; binding names that are
/// strings are added to `names` for the uniqueness check.
fn check_array(
    value: Option<&Value>,
    kind: Kind,
    report: &mut Report,
    names: &mut Vec<(String, Kind)>,
) -> Vec<Checked> {
    let field = kind.field();
    let items = match value {
        None => return vec![],
        Some(Value::Array(items)) => items,
        Some(other) => {
            report.problems.push(format!(
                "The field \"{field}\" should be an array but got {}.",
                other.echo()
            ));
            return vec![];
        }
    };
    let mut checked = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{field}[{i}]");
        if let Some(binding) = item.get("binding").and_then(Value::as_str) {
            names.push((binding.to_owned(), kind));
        }
        if let Some(ok) = check_binding(item, kind, &path, report) {
            checked.push(ok);
        }
    }
    checked
}

/// `validateSecretsStoreSecretBinding` (and its analogue for store bindings), then Coffer's
/// checks of the field values.
fn check_binding(item: &Value, kind: Kind, path: &str, report: &mut Report) -> Option<Checked> {
    // `typeof value !== "object" || value === null`: arrays pass this test in JavaScript and
    // then fail the field checks, so they do here too.
    let keys: Vec<String> = match item {
        Value::Object(entries) => entries.iter().map(|(k, _)| k.clone()).collect(),
        Value::Array(items) => (0..items.len()).map(|i| i.to_string()).collect(),
        other => {
            report.problems.push(format!(
                "\"{}\" bindings should be objects, but got {}",
                kind.field(),
                other.echo()
            ));
            return None;
        }
    };
    let mut fields_ok = true;
    for field in kind.required() {
        if item.get(field).and_then(Value::as_str).is_none() {
            report.problems.push(format!(
                "\"{path}\" bindings must have a string \"{field}\" field but got {}.",
                item.echo()
            ));
            fields_ok = false;
        }
    }
    let mut unexpected: Vec<String> = Vec::new();
    for key in keys {
        if !kind.required().contains(&key.as_str()) && !unexpected.contains(&key) {
            unexpected.push(key);
        }
    }
    if !unexpected.is_empty() {
        let quoted: Vec<String> = unexpected.iter().map(|k| format!("\"{k}\"")).collect();
        report.warnings.push(format!(
            "Unexpected fields found in {path} field: {}",
            quoted.join(",")
        ));
    }
    if !fields_ok {
        return None;
    }

    let text = |field: &str| item.get(field).and_then(Value::as_str).unwrap_or_default();
    let echo = |s: &str| Value::String(s.to_owned()).echo();
    let (binding, store_id) = (text("binding"), text("store_id"));
    let mut ok = true;
    if let Err(e) = BindingName::parse_exportable(binding) {
        report.problems.push(format!(
            "\"{path}\" binding {} {e} (`coffer run` exports each binding as an environment \
             variable)",
            echo(binding)
        ));
        ok = false;
    }
    if let Err(e) = StoreId::parse(store_id) {
        report
            .problems
            .push(format!("\"{path}\" store_id {} {e}", echo(store_id)));
        ok = false;
    }
    let secret_name = match kind {
        Kind::Secrets => {
            let name = text("secret_name");
            if let Err(e) = SecretName::parse(name) {
                report
                    .problems
                    .push(format!("\"{path}\" secret_name {} {e}", echo(name)));
                ok = false;
            }
            Some(name.to_owned())
        }
        Kind::Stores => None,
    };
    ok.then(|| Checked {
        binding: binding.to_owned(),
        store_id: store_id.to_owned(),
        secret_name,
    })
}

/// `validateBindingsHaveUniqueNames` over both arrays.
fn check_unique(names: &[(String, Kind)], report: &mut Report) {
    let mut order: Vec<&str> = Vec::new();
    for (name, _) in names {
        if !order.contains(&name.as_str()) {
            order.push(name);
        }
    }
    let mut duplicates = false;
    for name in order {
        let kinds: Vec<Kind> = names
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, k)| *k)
            .collect();
        if kinds.len() < 2 {
            continue;
        }
        duplicates = true;
        let mut distinct: Vec<Kind> = Vec::new();
        for k in &kinds {
            if !distinct.contains(k) {
                distinct.push(*k);
            }
        }
        if distinct.len() > 1 {
            let friendly: Vec<&str> = distinct.iter().map(|k| k.friendly()).collect();
            report.problems.push(format!(
                "{name} assigned to {} bindings.",
                english_list(&friendly)
            ));
        }
        for k in distinct {
            if kinds.iter().filter(|x| **x == k).count() > 1 {
                report.problems.push(format!(
                    "{name} assigned to multiple {} bindings.",
                    k.friendly()
                ));
            }
        }
    }
    if duplicates {
        report.problems.push(
            "Bindings must have unique names, so that they can all be referenced in the \
             service. Please change your bindings to have unique names."
                .to_owned(),
        );
    }
}

/// Wrangler's `[env.<name>]` sections: their bindings are not inherited from the top level and
/// replace it under `wrangler deploy --env <name>`. `coffer deploy` has no `--env`, so bindings
/// there would be silently left out: refuse instead.
fn check_envs(value: Option<&Value>, report: &mut Report) {
    let Some(Value::Object(envs)) = value else {
        return;
    };
    for (env, section) in envs {
        for kind in [Kind::Secrets, Kind::Stores] {
            if section.get(kind.field()).is_some() {
                report.problems.push(format!(
                    "env.{} defines {}; coffer deploy reads only the top-level bindings (--env \
                     is not supported)",
                    one_line(env),
                    kind.field()
                ));
            }
        }
    }
}

/// `new Intl.ListFormat("en-US").format(items)`: `A`, `A and B`, `A, B, and C`.
fn english_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [a, b] => format!("{a} and {b}"),
        [rest @ .., last] => format!("{}, and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests;
