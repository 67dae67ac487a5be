//! `coffer`: the command-line interface to a Coffer server, and the server itself.
//!
//! Thin by design: parsing in `args`, one function per command in `commands`, HTTP in
//! coffer-client, serving in coffer-server. Every failure ends as one line on standard error,
//! `error: ...` (a JSON object under `--log-format json`), and a non-zero exit status: 2 for
//! usage errors, 78 (EX_CONFIG) when the KEK's PKCS#11 token refused the login or is not there
//! (no restart can help, and retrying may lock the PIN: the systemd units do not restart on
//! it), 1 otherwise.

mod args;
mod commands;
mod config;
mod config_file;
mod manpages;
mod output;
mod resolve;
mod table;
mod usage;
mod value;

use std::io::Write;
use std::process::ExitCode;

use crate::args::{Command, LogFormat};
use crate::commands::{Problems, UsageError, json_log};

/// The exit status of a failed HSM login at start (sysexits.h's EX_CONFIG); the units'
/// `RestartPreventExitStatus=`.
pub(crate) const EXIT_HSM_LOGIN: u8 = 78;

fn main() -> ExitCode {
    // Exits with status 2 and clap's own message on a parse error or one line on a bad config
    // file, 0 for --help/--version.
    let cli = config_file::parse_command_line();
    let json = logs_json(&cli.command);
    if json {
        json_log::log_panics_as_json();
    }
    if let Command::Run(run) = cli.command {
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
        Err(e) => {
            let e = anyhow::Error::new(e).context("cannot start the runtime");
            return report(&e, json);
        }
    };
    match runtime.block_on(commands::run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e, json),
    }
}

/// Whether the command logs JSON (`coffer server|dev|edge --log-format json`): its last words
/// are then a JSON line too.
fn logs_json(command: &Command) -> bool {
    let log = match command {
        Command::Server(args) => &args.log,
        Command::Dev(args) => &args.log,
        Command::Edge(args) => &args.log,
        _ => return false,
    };
    matches!(log.log_format, LogFormat::Json)
}

fn report(err: &anyhow::Error, json: bool) -> ExitCode {
    if is_broken_pipe(err) {
        // The reader went away (`coffer secret list | head`): nothing to say to anyone.
        return ExitCode::FAILURE;
    }
    let mut stderr = std::io::stderr().lock();
    let mut say = |message: &str| {
        let line = if json {
            json_log::error_line(message)
        } else {
            format!("error: {message}")
        };
        let _ = writeln!(stderr, "{line}");
    };
    if let Some(problems) = err.downcast_ref::<Problems>() {
        for problem in &problems.0 {
            say(&table::one_line(problem));
        }
        return ExitCode::FAILURE;
    }
    say(&render(err));
    exit_code(err)
}

fn exit_code(err: &anyhow::Error) -> ExitCode {
    let hsm_login = err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<coffer_server::ServerError>(),
            Some(coffer_server::ServerError::HsmLogin { .. })
        )
    });
    if err.downcast_ref::<UsageError>().is_some() {
        ExitCode::from(2)
    } else if hsm_login {
        ExitCode::from(EXIT_HSM_LOGIN)
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

    #[test]
    fn a_failed_hsm_login_exits_with_78_even_under_context() {
        let login = || coffer_server::ServerError::HsmLogin {
            path: "d".into(),
            message: "KEK: refused the user PIN".into(),
        };
        assert_eq!(exit_code(&login().into()), ExitCode::from(78));
        let wrapped = anyhow::Error::new(login()).context("cannot start");
        assert_eq!(exit_code(&wrapped), ExitCode::from(78));
        let other = coffer_server::ServerError::DataDir {
            path: "d".into(),
            message: "KEK: wrong key".into(),
        };
        assert_eq!(exit_code(&other.into()), ExitCode::FAILURE);
    }
}
