//! A loaded file's keys as flags: which ones the command line and the environment leave to the
//! file, paths resolved and checked, clap's errors about them told in the file's terms, and
//! the checks that need the parsed values.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command, ValueHint};

use super::keys::Key;
use super::load::{Entry, Loaded};
use super::schema::SECRET_PATH_KEYS;
use super::{Failure, Kind};

/// The file's keys that the command takes from it, as flags.
#[derive(Debug)]
pub struct Applied {
    kind: Kind,
    file: PathBuf,
    used: Vec<Used>,
    /// The ids of the flags the environment gave.
    from_env: Vec<String>,
}

/// A key the command takes from the file.
#[derive(Debug)]
struct Used {
    key: Key,
    /// Where it is written: `line L, column C`.
    place: String,
    /// Its flag's id.
    id: String,
    /// The flag's arguments: `--name=value` once per value (a switch set to false adds none).
    flags: Vec<OsString>,
}

/// Which of `loaded`'s keys `sub` (the subcommand, parsed leniently as `matches`) takes: those
/// whose flag was given neither on the command line nor in the environment.
pub fn apply(
    kind: Kind,
    file: &Path,
    loaded: &Loaded,
    sub: &Command,
    matches: &ArgMatches,
) -> Result<Applied, Failure> {
    let here = |entry: &Entry, problem: String| {
        Failure::File(format!(
            "{}: {}: key `{}`: {problem}",
            file.display(),
            entry.place,
            entry.key
        ))
    };
    let base = file.parent().unwrap_or(Path::new(""));
    let mut used = Vec::new();
    for entry in &loaded.entries {
        let (key, value) = (&entry.key, &entry.value);
        // The schema and the flags are kept in step by a test; a key without a flag is a bug
        // here, not in the file.
        let Some(arg) = key.arg(sub) else {
            return Err(here(
                entry,
                format!("no `coffer {}` flag takes it", kind.name()),
            ));
        };
        let id = arg.get_id().as_str().to_owned();
        if matches!(
            matches.value_source(&id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let long = arg.get_long().expect("every flag a key stands for is long");
        let mut flags = Vec::new();
        let items = match value {
            toml::Value::Array(items) => items.as_slice(),
            single => std::slice::from_ref(single),
        };
        let secret_path = SECRET_PATH_KEYS.contains(&key.to_string().as_str());
        for item in items {
            let text = match item {
                // Switches take `--flag=true` or `--flag=false`, so the file's `false` is
                // written out too (a test keeps every switch with a key taking a value).
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                other => {
                    return Err(here(
                        entry,
                        format!("a {} is not a value of --{long}", other.type_str()),
                    ));
                }
            };
            let mut flag = OsString::from(format!("--{long}="));
            match path_kind(arg) {
                Some(must_be) => {
                    let path = base.join(&text);
                    must_be
                        .check(&path)
                        .map_err(|p| here(entry, p.told(&path, secret_path)))?;
                    flag.push(path);
                }
                None => flag.push(text),
            }
            flags.push(flag);
        }
        used.push(Used {
            key: key.clone(),
            place: entry.place.clone(),
            id,
            flags,
        });
    }
    let from_env = sub
        .get_arguments()
        .map(|a| a.get_id().as_str())
        .filter(|id| matches.value_source(id) == Some(ValueSource::EnvVariable))
        .map(str::to_owned)
        .collect();
    Ok(Applied {
        kind,
        file: file.to_owned(),
        used,
        from_env,
    })
}

/// What a path a key names must be when the command starts.
#[derive(Debug, Clone, Copy)]
enum MustBe {
    File,
    Dir,
    /// Created if missing (an edge's data dir).
    Anything,
}

/// Why a path a key names cannot be used.
#[derive(Debug)]
enum PathProblem {
    Missing,
    NotA(&'static str),
    Unreadable(std::io::Error),
}

impl PathProblem {
    /// The problem with `path`, which is named (cut short) unless it is `secret`: the value of
    /// a key naming key material or a token is never repeated, as the secret itself may have
    /// been pasted in its place.
    fn told(&self, path: &Path, secret: bool) -> String {
        if secret {
            return match self {
                PathProblem::Missing => "names no file".to_owned(),
                PathProblem::NotA(what) => format!("names something that is not {what}"),
                PathProblem::Unreadable(e) => format!("names a file that cannot be read: {e}"),
            };
        }
        let shown = super::echo(&path.display().to_string());
        match self {
            PathProblem::Missing => format!("{shown} does not exist"),
            PathProblem::NotA(what) => format!("{shown} is not {what}"),
            PathProblem::Unreadable(e) => format!("cannot read {shown}: {e}"),
        }
    }
}

impl MustBe {
    fn check(self, path: &Path) -> Result<(), PathProblem> {
        let what = match self {
            MustBe::Anything => return Ok(()),
            MustBe::File => "a file",
            MustBe::Dir => "a directory",
        };
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() && matches!(self, MustBe::Dir) => Ok(()),
            Ok(meta) if meta.is_file() && matches!(self, MustBe::File) => Ok(()),
            Ok(_) => Err(PathProblem::NotA(what)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(PathProblem::Missing),
            Err(e) => Err(PathProblem::Unreadable(e)),
        }
    }
}

/// How a flag's value is a path, by its value hint: relative paths in a file are relative to
/// the file's directory.
fn path_kind(arg: &Arg) -> Option<MustBe> {
    match arg.get_value_hint() {
        ValueHint::FilePath => Some(MustBe::File),
        ValueHint::DirPath => Some(MustBe::Dir),
        ValueHint::AnyPath => Some(MustBe::Anything),
        _ => None,
    }
}

impl Applied {
    /// The flags to append to the command line.
    pub fn args(&self) -> impl Iterator<Item = OsString> + '_ {
        self.used.iter().flat_map(|u| u.flags.iter().cloned())
    }

    fn used(&self, id: &str) -> Option<&Used> {
        self.used.iter().find(|u| u.id == id)
    }

    fn key_of(&self, id: &str) -> Option<&Key> {
        self.used(id).map(|u| &u.key)
    }

    /// `FILE: line L, column C` where the first of `ids` that came from the file is written.
    fn at(&self, ids: &[&str]) -> String {
        match ids.iter().find_map(|id| self.used(id)) {
            Some(used) => format!("{}: {}", self.file.display(), used.place),
            None => self.file.display().to_string(),
        }
    }

    /// How a message names `arg`: by where its value came from (the file's key, the
    /// environment variable, or the flag).
    fn name(&self, arg: &Arg) -> String {
        let id = arg.get_id().as_str();
        if let Some(key) = self.key_of(id) {
            return format!("key `{key}`");
        }
        match arg.get_env() {
            Some(var) if self.from_env.iter().any(|e| e == id) => {
                format!("{} (environment)", var.to_string_lossy())
            }
            _ => format!("--{}", arg.get_long().unwrap_or(id)),
        }
    }

    /// The flags clap names in an error's `kind` context, found among `sub`'s arguments.
    fn args_named<'c>(e: &clap::Error, kind: ContextKind, sub: &'c Command) -> Vec<&'c Arg> {
        let names: Vec<String> = match e.get(kind) {
            Some(ContextValue::String(s)) => vec![s.clone()],
            Some(ContextValue::Strings(v)) => v.clone(),
            _ => vec![],
        };
        names
            .iter()
            .filter_map(|n| sub.get_arguments().find(|a| a.to_string() == *n))
            .collect()
    }

    /// clap's error `e` about the command line `args` plus the file's flags, in the file's terms
    /// when it is about a key; `command` is what parsed them.
    pub fn explain(&self, e: clap::Error, command: &Command, args: &[OsString]) -> Failure {
        // An argument renders (`--name <VALUE>`, as clap's errors name it) once built.
        let mut built = command.clone();
        built.build();
        let Some(sub) = built.find_subcommand(self.kind.name()) else {
            return Failure::Clap(e);
        };
        let invalid = Self::args_named(&e, ContextKind::InvalidArg, sub);
        let from_file = |a: &&Arg| self.key_of(a.get_id().as_str()).is_some();
        match e.kind() {
            ErrorKind::ValueValidation | ErrorKind::InvalidValue => {
                let Some(arg) = invalid.first().filter(|a| from_file(a)) else {
                    return Failure::Clap(e);
                };
                let value = match e.get(ContextKind::InvalidValue) {
                    Some(ContextValue::String(v)) => v.clone(),
                    _ => String::new(),
                };
                let secret = self
                    .key_of(arg.get_id().as_str())
                    .is_some_and(|k| SECRET_PATH_KEYS.contains(&k.to_string().as_str()));
                let value = if secret {
                    String::new()
                } else {
                    format!(" {:?}", super::echo(&value))
                };
                let why = match (
                    std::error::Error::source(&e),
                    e.get(ContextKind::ValidValue),
                ) {
                    (Some(source), _) => source.to_string(),
                    (None, Some(ContextValue::Strings(valid))) => {
                        format!("expected one of {}", valid.join(", "))
                    }
                    _ => super::first_line(&e),
                };
                Failure::File(format!(
                    "{}: {}: invalid value{value}: {}",
                    self.at(&[arg.get_id().as_str()]),
                    self.name(arg),
                    crate::config::clip(&why, 2 * super::ECHO_MAX_CHARS)
                ))
            }
            ErrorKind::ArgumentConflict => {
                let prior = Self::args_named(&e, ContextKind::PriorArg, sub);
                let (Some(a), Some(b)) = (invalid.first(), prior.first()) else {
                    return Failure::Clap(e);
                };
                if !from_file(a) && !from_file(b) {
                    return Failure::Clap(e);
                }
                Failure::File(format!(
                    "{}: {} cannot be used with {}",
                    self.at(&[a.get_id().as_str(), b.get_id().as_str()]),
                    self.name(a),
                    self.name(b)
                ))
            }
            ErrorKind::MissingRequiredArgument => {
                let Some(missing) = invalid.first() else {
                    return Failure::Clap(e);
                };
                let missing_key = self
                    .kind
                    .keys()
                    .into_iter()
                    .find(|k| k.arg(sub).is_some_and(|a| a.get_id() == missing.get_id()));
                let flag = format!("--{}", missing.get_long().unwrap_or_default());
                let as_key = match &missing_key {
                    Some(key) => format!("key `{key}`"),
                    None => flag.clone(),
                };
                if let Some(needs_it) = self.requirer(missing, command, args) {
                    let or_flag = match &missing_key {
                        Some(_) => format!(" (or {flag})"),
                        None => String::new(),
                    };
                    return Failure::File(format!(
                        "{}: {}: key `{}` requires {as_key}{or_flag} too",
                        self.file.display(),
                        needs_it.place,
                        needs_it.key
                    ));
                }
                if !missing.is_required_set() {
                    return Failure::Clap(e);
                }
                let env = missing
                    .get_env()
                    .map(|v| format!(", or {}", v.to_string_lossy()))
                    .unwrap_or_default();
                let alternatives = match &missing_key {
                    Some(_) => format!(" (or {flag}{env})"),
                    // A setting no file holds (a secret).
                    None if env.is_empty() => String::new(),
                    None => format!(" (or {})", &env[", or ".len()..]),
                };
                Failure::File(format!(
                    "{}: {as_key} is required{alternatives}",
                    self.file.display()
                ))
            }
            _ => Failure::Clap(e),
        }
    }

    /// The key whose flag makes `missing` required: the one without which the parse no longer
    /// asks for it.
    fn requirer(&self, missing: &Arg, command: &Command, args: &[OsString]) -> Option<&Used> {
        let wanted = missing.to_string();
        self.used.iter().find(|candidate| {
            let mut all = args.to_vec();
            all.extend(
                self.used
                    .iter()
                    .filter(|u| u.id != candidate.id)
                    .flat_map(|u| u.flags.iter().cloned()),
            );
            match command.clone().try_get_matches_from(&all) {
                Ok(_) => true,
                Err(e) => {
                    e.kind() != ErrorKind::MissingRequiredArgument
                        || !matches!(e.get(ContextKind::InvalidArg),
                            Some(ContextValue::Strings(v)) if v.contains(&wanted))
                }
            }
        })
    }

    /// The checks made once every value is known, for those the file took part in:
    /// `insecure-http = true` with a TLS certificate (a conflict clap cannot express, since
    /// `--insecure-http=false` is none); plain HTTP off loopback needs TLS or `insecure-http`
    /// (the server's own rule); an edge's upstreams are checked by the edge's own rule (no
    /// credentials in them, no plain HTTP off loopback without `insecure-http-upstream`).
    /// Whatever the file had no part in is left to clap's conflicts and to the start.
    pub fn check(&self, sub: &Command, matches: &ArgMatches) -> Result<(), Failure> {
        let named = |id: &str| sub.get_arguments().find(|a| a.get_id() == id);
        if insecure_with_tls(matches)
            && let (Some(a), Some(b)) = (named("insecure_http"), named("tls_cert"))
            && (self.key_of("insecure_http").is_some() || self.key_of("tls_cert").is_some())
        {
            return Err(Failure::File(format!(
                "{}: {} cannot be used with {}",
                self.at(&["insecure_http", "tls_cert"]),
                self.name(a),
                self.name(b)
            )));
        }
        self.check_plain_http(matches)?;
        self.check_upstreams(matches)
    }

    /// The file's part in a problem, told with its keys.
    fn file_problem(&self, involved: &[&str], problem: &dyn std::fmt::Display) -> Option<Failure> {
        let keys: Vec<String> = involved
            .iter()
            .filter_map(|id| self.key_of(id))
            .map(|k| format!("key `{k}`"))
            .collect();
        (!keys.is_empty()).then(|| {
            Failure::File(format!(
                "{}: {}: {problem}",
                self.at(involved),
                keys.join(", ")
            ))
        })
    }

    fn check_plain_http(&self, matches: &ArgMatches) -> Result<(), Failure> {
        let Ok(Some(listen)) = matches.try_get_one::<SocketAddr>("listen") else {
            return Ok(());
        };
        let tls = matches
            .try_get_one::<PathBuf>("tls_cert")
            .is_ok_and(|c| c.is_some());
        let insecure = matches
            .try_get_one::<bool>("insecure_http")
            .is_ok_and(|b| b == Some(&true));
        if let Err(e) = coffer_server::check_plain_http(*listen, tls, insecure)
            && let Some(failure) = self.file_problem(&["listen", "tls_cert", "insecure_http"], &e)
        {
            return Err(failure);
        }
        Ok(())
    }

    fn check_upstreams(&self, matches: &ArgMatches) -> Result<(), Failure> {
        let Ok(Some(upstreams)) = matches.try_get_many::<String>("upstreams") else {
            return Ok(());
        };
        let upstreams: Vec<String> = upstreams
            .filter(|u| !u.trim().is_empty())
            .cloned()
            .collect();
        if upstreams.is_empty() {
            return Ok(());
        }
        let insecure = matches
            .try_get_one::<bool>("insecure_http_upstream")
            .is_ok_and(|b| b == Some(&true));
        if let Err(e) = coffer_edge::check_upstreams(&upstreams, insecure)
            && let Some(failure) = self.file_problem(&["upstreams", "insecure_http_upstream"], &e)
        {
            return Err(failure);
        }
        Ok(())
    }
}

/// Whether `--insecure-http` is true while a TLS certificate is given: refused, as clap would
/// refuse a conflict (see [`Applied::check`]).
pub fn insecure_with_tls(matches: &ArgMatches) -> bool {
    matches
        .try_get_one::<bool>("insecure_http")
        .is_ok_and(|b| b == Some(&true))
        && matches
            .try_get_one::<PathBuf>("tls_cert")
            .is_ok_and(|c| c.is_some())
}
