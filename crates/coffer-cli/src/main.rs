//! `coffer`: the command-line interface to a Coffer server, and the server itself.
//!
//! Thin by design: parsing in `args`, one function per command in `commands`, HTTP in
//! coffer-client, serving in coffer-server. Every failure ends as one line on standard error,
//! `error: ...`, and a non-zero exit status (2 for usage errors, 1 otherwise).

mod args;
mod commands;
mod config;
mod manpages;
mod output;
mod resolve;
mod table;
mod value;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::commands::{Problems, UsageError};

fn main() -> ExitCode {
    // Exits with status 2 and clap's own message on a parse error, 0 for --help/--version.
    let cli = args::Cli::parse();
    if let args::Command::Run(run) = cli.command {
        // Before any multi-threaded runtime: on success this process becomes the command.
        let failure = commands::run::run(run);
        let _ = writeln!(std::io::stderr(), "error: {}", render(&failure.error));
        return ExitCode::from(failure.status);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return report(&anyhow::Error::new(e).context("cannot start the runtime")),
    };
    match runtime.block_on(commands::run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

fn report(err: &anyhow::Error) -> ExitCode {
    if is_broken_pipe(err) {
        // The reader went away (`coffer secret list | head`): nothing to say to anyone.
        return ExitCode::FAILURE;
    }
    if let Some(problems) = err.downcast_ref::<Problems>() {
        let mut stderr = std::io::stderr().lock();
        for problem in &problems.0 {
            let _ = writeln!(stderr, "error: {}", table::one_line(problem));
        }
        return ExitCode::FAILURE;
    }
    let _ = writeln!(std::io::stderr(), "error: {}", render(err));
    exit_code(err)
}

fn exit_code(err: &anyhow::Error) -> ExitCode {
    if err.downcast_ref::<UsageError>().is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// The error and its causes on one line, skipping a cause whose text the line already holds
/// (many errors repeat their source in their own message). A client error's own message is
/// complete, so its transport internals are not appended.
fn render(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        if cause.is::<coffer_client::Error>() || cause.is::<coffer_client::RuntimeError>() {
            break;
        }
    }
    table::one_line(&line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_joined_without_repetition() {
        let io = std::io::Error::other("disk on fire");
        let err = anyhow::Error::new(io).context("cannot write x: disk on fire");
        assert_eq!(render(&err), "cannot write x: disk on fire");
        let err = anyhow::Error::new(std::io::Error::other("inner")).context("outer");
        assert_eq!(render(&err), "outer: inner");
    }

    #[test]
    fn rendering_is_one_line() {
        let err = anyhow::anyhow!("two\nlines");
        assert_eq!(render(&err), "two\\nlines");
    }

    #[test]
    fn usage_errors_exit_with_two() {
        let err: anyhow::Error = UsageError("x".into()).into();
        assert_eq!(exit_code(&err), ExitCode::from(2));
        assert_eq!(exit_code(&anyhow::anyhow!("y")), ExitCode::FAILURE);
    }
}
