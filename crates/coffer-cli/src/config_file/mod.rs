//! Config files for `coffer server`, `coffer edge` and `coffer dev` (`--config FILE`), and
//! `coffer config check`. The format is docs/configuration.md.
//!
//! One mechanism for every flag: the command line is parsed once, leniently, to learn which
//! flags the command line or the environment gave (`ArgMatches::value_source`); every key of
//! the file whose flag they did not give becomes that flag, appended to the command line; and
//! the whole is parsed again by clap, strictly. So a key is checked by its flag's own parser,
//! pairs and conflicts are clap's, and precedence is flag > environment > file > default. The
//! errors clap raises about a value that came from the file are told in the file's terms (file,
//! key, what was wrong), on one line.
//!
//! - `schema.rs`: the keys of each kind of file (serde structs, `deny_unknown_fields`);
//! - `keys.rs`: the list of keys read from the schema, and the flag each key stands for;
//! - `load.rs`: reading, TOML, the schema's errors (unknown key, wrong type, a secret);
//! - `merge.rs`: keys into flags, paths, clap's errors about them, the checks after parsing.

mod keys;
mod load;
mod merge;
mod schema;
#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::builder::Resettable;
use clap::{ArgMatches, Command, CommandFactory, FromArgMatches, ValueEnum};

use crate::args::Cli;

pub use keys::Key;
pub(crate) use load::database_url_has_password;
pub use schema::looks_like_secret;

/// Longest rendering of a file's value repeated in a message, in characters.
const ECHO_MAX_CHARS: usize = 100;

/// `text` as a message repeats it: cut to [`ECHO_MAX_CHARS`].
fn echo(text: &str) -> String {
    crate::config::clip(text, ECHO_MAX_CHARS)
}

/// The commands that take `--config`, each with its own kind of file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Server,
    Edge,
    Dev,
}

impl Kind {
    /// The subcommand's name, which is also how messages call the file.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Server => "server",
            Kind::Edge => "edge",
            Kind::Dev => "dev",
        }
    }

    fn of_command(name: &str) -> Option<Kind> {
        Kind::value_variants()
            .iter()
            .copied()
            .find(|k| k.name() == name)
    }

    /// Every key a file of this kind may hold.
    pub fn keys(self) -> Vec<Key> {
        match self {
            Kind::Server => keys::keys_of::<schema::ServerFile>(),
            Kind::Edge => keys::keys_of::<schema::EdgeFile>(),
            Kind::Dev => keys::keys_of::<schema::DevFile>(),
        }
    }
}

/// Why the command line (with its config file) cannot be used.
#[derive(Debug)]
pub enum Failure {
    /// A mistake on the command line alone: clap's own message and exit.
    Clap(clap::Error),
    /// A mistake in the config file, or between it and the command line: one line, naming the
    /// file and the key.
    File(String),
}

/// `coffer`'s command line, with the config file of `server`, `edge` or `dev` if one is given;
/// exits like clap (status 2) on a usage error or a bad config file.
pub fn parse_command_line() -> Cli {
    let args: Vec<OsString> = std::env::args_os().collect();
    let parsed = matches(Cli::command(), &args).and_then(|m| {
        Cli::from_arg_matches(&m).map_err(|e| Failure::Clap(e.format(&mut Cli::command())))
    });
    match parsed {
        Ok(cli) => cli,
        Err(Failure::Clap(e)) => e.exit(),
        Err(Failure::File(line)) => {
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("error: {}\n", crate::table::one_line(&line)).as_bytes(),
            );
            std::process::exit(2);
        }
    }
}

/// `coffer config check`: what starting `kind` with this file alone would say of it, without
/// starting. Neither the environment nor any flag is consulted, and settings the file may
/// leave to them (`data-dir`, `upstream`) may be missing.
pub fn check(path: &Path, kind: Kind) -> Result<(), String> {
    let command = Cli::command().mut_subcommand(kind.name(), |sub| {
        sub.mut_args(|arg| arg.env(None).required(false))
    });
    let args: Vec<OsString> = vec![
        "coffer".into(),
        kind.name().into(),
        "--config".into(),
        path.into(),
    ];
    match matches(command, &args) {
        Ok(_) => Ok(()),
        Err(Failure::File(line)) => Err(line),
        // Not expected of a command line this plain; clap's first line says what.
        Err(Failure::Clap(e)) => Err(first_line(&e)),
    }
}

/// clap's message without its `error: ` and usage lines.
fn first_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// `args` parsed by `command`, the config file's keys added as flags where the command line and
/// the environment did not give them; then the one conflict clap cannot express, between
/// `--insecure-http=true` and `--tls-cert` (`--insecure-http=false` is no conflict), for a
/// command line that the file had no part in.
fn matches(command: Command, args: &[OsString]) -> Result<ArgMatches, Failure> {
    let matches = with_file(&command, args)?;
    if let Some((name, sub)) = matches.subcommand()
        && Kind::of_command(name).is_some()
        && merge::insecure_with_tls(sub)
    {
        let mut built = command;
        built.build();
        if let Some(sub) = built.find_subcommand_mut(name) {
            return Err(Failure::Clap(sub.error(
                clap::error::ErrorKind::ArgumentConflict,
                "the argument '--insecure-http' cannot be used with '--tls-cert <FILE>'",
            )));
        }
    }
    Ok(matches)
}

/// [`matches`] but for the conflict it checks last.
fn with_file(command: &Command, args: &[OsString]) -> Result<ArgMatches, Failure> {
    // Pairs, conflicts and required flags wait for the file: a pair may be split between it
    // and the command line. Anything else wrong on the command line is clap's to report.
    let lenient = relax(command.clone());
    let Ok(first) = lenient.try_get_matches_from(args) else {
        return command
            .clone()
            .try_get_matches_from(args)
            .map_err(Failure::Clap);
    };
    let Some((name, sub)) = first.subcommand() else {
        return command
            .clone()
            .try_get_matches_from(args)
            .map_err(Failure::Clap);
    };
    let (Some(kind), Some(path)) = (
        Kind::of_command(name),
        sub.try_get_one::<PathBuf>("config").ok().flatten(),
    ) else {
        return command
            .clone()
            .try_get_matches_from(args)
            .map_err(Failure::Clap);
    };
    let file =
        load::load(kind, path).map_err(|e| Failure::File(format!("{}: {e}", path.display())))?;
    let subcommand = command
        .find_subcommand(kind.name())
        .expect("a kind names a subcommand");
    let applied = merge::apply(kind, path, &file, subcommand, sub)?;
    let mut all = args.to_vec();
    all.extend(applied.args());
    let matches = command
        .clone()
        .try_get_matches_from(&all)
        .map_err(|e| applied.explain(e, command, args))?;
    let (_, sub) = matches.subcommand().expect("parsed with its subcommand");
    applied.check(subcommand, sub)?;
    Ok(matches)
}

/// `command` with the config-taking subcommands' pairs, conflicts and required flags lifted.
fn relax(mut command: Command) -> Command {
    for kind in Kind::value_variants() {
        command = command.mut_subcommand(kind.name(), |sub| {
            sub.mut_args(|arg| {
                arg.required(false)
                    .requires(Resettable::Reset)
                    .conflicts_with(Resettable::Reset)
            })
        });
    }
    command
}
