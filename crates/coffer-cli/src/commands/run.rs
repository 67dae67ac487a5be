//! `coffer run -- CMD [ARGS...]`: reads the service's secret bindings and becomes CMD with them
//! in its environment.
//!
//! On Unix the process *becomes* CMD (`execvp`), rather than running it as a child: CMD inherits
//! the standard streams and the process id, so every signal (Ctrl-C, a supervisor's SIGTERM)
//! reaches CMD itself, with no relay to get wrong, and CMD's exit status, death by a signal
//! included, is the status the caller sees. The bindings are read first, on a current-thread
//! runtime that is dropped before the exec, so no thread of ours is running when CMD starts.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::process::Command;

use anyhow::Context;
use coffer_client::{AllBindings, Env, SERVICE_TOKEN_VAR, SecretValue};
use coffer_types::{BindingName, BindingNameError};

use crate::args::RunArgs;

/// How `coffer run` failed, and the exit status to end with.
#[derive(Debug)]
pub struct RunFailure {
    pub error: anyhow::Error,
    pub status: u8,
}

impl RunFailure {
    fn failed(error: anyhow::Error) -> RunFailure {
        RunFailure { error, status: 1 }
    }
}

/// Reads the bindings and runs CMD. Returns only if something failed (on Unix, success means
/// this process is CMD now).
pub fn run(args: RunArgs) -> RunFailure {
    let Some((program, program_args)) = args.command.split_first() else {
        // clap requires CMD; this is only a guard.
        return RunFailure {
            error: super::UsageError("missing CMD: coffer run -- CMD [ARGS...]".to_owned()).into(),
            status: 2,
        };
    };
    let AllBindings {
        values,
        store_bindings,
    } = match fetch(&args) {
        Ok(all) => all,
        Err(error) => return RunFailure::failed(error),
    };
    if let Some(note) = store_bindings_note(&store_bindings) {
        let _ = writeln!(std::io::stderr(), "{note}");
    }
    let mut cmd = match command(program, program_args, &values) {
        Ok(cmd) => cmd,
        Err(error) => return RunFailure::failed(error),
    };
    drop(values);
    exec(&mut cmd, program)
}

/// Every secret binding, and the store bindings' names, in one request, on a runtime that is
/// gone when this returns.
fn fetch(args: &RunArgs) -> anyhow::Result<AllBindings> {
    let mut builder = Env::builder();
    if let Some(token) = &args.service_token {
        builder = builder.service_token(token.0.as_str());
    }
    if let Some(url) = &args.api_url {
        builder = builder.api_url(url.as_str());
    }
    if let Some(ca) = &args.ca_cert {
        builder = builder.ca_cert(ca);
    }
    let env = builder.build()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let values = runtime
        .block_on(env.get_all_with_store_bindings())
        .context("cannot read the service's bindings")?;
    drop(env);
    drop(runtime);
    Ok(values)
}

/// What `coffer run` says, before CMD starts, about the service's store bindings: it does not
/// export them. A store binding gives any secret of its store (that carries the service's type)
/// by name, now or later, and the runtime API lists no store's secrets: there is no fixed set of
/// variables to make, and secret names (`openai-key`) are not variable names.
fn store_bindings_note(store_bindings: &[String]) -> Option<String> {
    let (first, rest) = store_bindings.split_first()?;
    let names = std::iter::once(first)
        .chain(rest)
        .map(|n| crate::table::one_line(n))
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "note: coffer run does not export the store binding{s} {names}: a store binding gives its \
         store's secrets by name, not a fixed set of variables; read them through the runtime \
         API (GET /runtime/v1/stores/{first}/secrets/NAME, or the SDK's env.store(\"{first}\")), \
         or bind each secret under its own name with [[secrets_store_secrets]]",
        s = if rest.is_empty() { "" } else { "s" },
        first = crate::table::one_line(first),
    ))
}

/// CMD with each binding in its environment under its name, and without the service token.
fn command(
    program: &OsString,
    args: &[OsString],
    values: &BTreeMap<String, SecretValue>,
) -> anyhow::Result<Command> {
    let mut cmd = Command::new(program);
    cmd.args(args).env_remove(SERVICE_TOKEN_VAR);
    for (name, value) in values {
        // The rule deploys are checked with; a service deployed before a name was reserved
        // still meets it here.
        match BindingName::parse_exportable(name) {
            Ok(_) => {}
            Err(e @ BindingNameError::Reserved) => anyhow::bail!(
                "the binding {name} is refused: it {e}; rename the binding and deploy again"
            ),
            Err(e) => anyhow::bail!(
                "the binding {:?} cannot be an environment variable: it {e}",
                crate::table::one_line(name)
            ),
        }
        if value.expose_secret().contains('\0') {
            anyhow::bail!(
                "the value of binding {name} contains a NUL byte, which an environment variable \
                 cannot hold"
            );
        }
        cmd.env(name, value.expose_secret());
    }
    Ok(cmd)
}

#[cfg(unix)]
fn exec(cmd: &mut Command, program: &OsString) -> RunFailure {
    use std::os::unix::process::CommandExt;
    let err = cmd.exec();
    exec_failure(program, &err)
}

/// Without `exec`: run CMD as a child and end with its exit status.
#[cfg(not(unix))]
fn exec(cmd: &mut Command, program: &OsString) -> RunFailure {
    match cmd.status() {
        Ok(status) => {
            let code = status.code().unwrap_or(1);
            std::process::exit(code)
        }
        Err(err) => exec_failure(program, &err),
    }
}

/// Like a shell: 127 when CMD is not found, 126 when it is found but cannot be run.
fn exec_failure(program: &OsString, err: &std::io::Error) -> RunFailure {
    let status = if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    RunFailure {
        error: anyhow::anyhow!("cannot run {:?}: {err}", program.to_string_lossy()),
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretValue> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), SecretValue::new((*v).to_owned())))
            .collect()
    }

    fn env_of(cmd: &Command) -> Vec<(String, Option<String>)> {
        cmd.get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect()
    }

    #[test]
    fn bindings_become_variables_and_the_token_is_removed() {
        let cmd = command(
            &"sh".into(),
            &["-c".into(), "true".into()],
            &values(&[("OPENAI_KEY", "sk-1"), ("_B2", "x y\nz")]),
        )
        .unwrap();
        let mut env = env_of(&cmd);
        env.sort();
        assert_eq!(
            env,
            [
                ("COFFER_SERVICE_TOKEN".to_owned(), None),
                ("OPENAI_KEY".to_owned(), Some("sk-1".to_owned())),
                ("_B2".to_owned(), Some("x y\nz".to_owned())),
            ]
        );
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(args, ["-c", "true"]);
    }

    #[test]
    fn names_that_are_not_variables_and_nul_bytes_are_refused_without_the_value() {
        for bad in ["MY-KEY", "1A", "A=B", ""] {
            let err = command(&"sh".into(), &[], &values(&[(bad, "v4lue")])).unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with(&format!(
                    "the binding {bad:?} cannot be an environment variable"
                )),
                "{text}"
            );
            assert!(!text.contains("v4lue"), "{text}");
        }
        let err = command(&"sh".into(), &[], &values(&[("K", "a\0b-v4lue")])).unwrap_err();
        assert!(err.to_string().contains("binding K contains a NUL byte"));
        assert!(!err.to_string().contains("v4lue"));
    }

    #[test]
    fn store_bindings_are_named_in_a_note_and_not_exported() {
        assert_eq!(store_bindings_note(&[]), None);
        let note = store_bindings_note(&["ALL".to_owned()]).unwrap();
        assert!(
            note.starts_with("note: coffer run does not export the store binding ALL: "),
            "{note}"
        );
        assert!(
            note.contains("GET /runtime/v1/stores/ALL/secrets/NAME"),
            "{note}"
        );
        assert!(!note.contains('\n'), "{note}");
        let note = store_bindings_note(&["ALL".to_owned(), "SHARED".to_owned()]).unwrap();
        assert!(
            note.starts_with("note: coffer run does not export the store bindings ALL, SHARED: "),
            "{note}"
        );
    }

    #[test]
    fn exec_failures_exit_like_a_shell() {
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let f = exec_failure(&"nosuch".into(), &missing);
        assert_eq!(f.status, 127);
        assert!(f.error.to_string().starts_with("cannot run \"nosuch\": "));
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(exec_failure(&"x".into(), &denied).status, 126);
    }

    #[test]
    fn a_missing_token_fails_before_any_request() {
        let args = RunArgs {
            service_token: None,
            api_url: Some("http://127.0.0.1:1".into()),
            ca_cert: None,
            command: vec!["true".into()],
        };
        let err = fetch(&args).unwrap_err();
        assert!(err.to_string().contains("COFFER_SERVICE_TOKEN"), "{err:#}");
    }

    #[test]
    fn names_that_steer_the_loader_or_the_lookup_are_refused_before_exec() {
        for bad in [
            "PATH",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "LD_",
            "DYLD_INSERT_LIBRARIES",
            "IFS",
            "ENV",
            "BASH_ENV",
            "PROMPT_COMMAND",
            "HOME",
            "SHELL",
            "NODE_OPTIONS",
            "NODE_PATH",
            "PYTHONPATH",
            "PYTHONHOME",
            "PYTHONSTARTUP",
            "PERL5LIB",
            "PERL5OPT",
            "RUBYLIB",
            "RUBYOPT",
            "JAVA_TOOL_OPTIONS",
            "GCONV_PATH",
            "SSL_CERT_FILE",
            "GIT_SSH_COMMAND",
            "HTTPS_PROXY",
            // Stored before the list grew, or in another case: refused all the same.
            "https_proxy",
            "java_tool_options",
            "Path",
        ] {
            let err = command(
                &"sh".into(),
                &[],
                &values(&[("OK_KEY", "fine"), (bad, "/tmp/evil-v4lue")]),
            )
            .unwrap_err();
            let text = err.to_string();
            assert_eq!(
                text,
                format!(
                    "the binding {bad} is refused: it is reserved: an environment variable of \
                     that name changes how a program is found, loaded or run (docs/bindings.md \
                     lists the reserved names); rename the binding and deploy again"
                )
            );
            assert!(!text.contains("v4lue"), "{text}");
        }
        // Names that merely look alike are ordinary bindings.
        let cmd = command(
            &"sh".into(),
            &[],
            &values(&[
                ("MY_PATH", "a"),
                ("PATHS", "b"),
                ("OLD_LD", "c"),
                ("ENVIRONMENT", "d"),
            ]),
        )
        .unwrap();
        assert_eq!(env_of(&cmd).len(), 5);
    }

    fn run_args(ca_cert: std::path::PathBuf) -> RunArgs {
        RunArgs {
            service_token: Some(crate::args::TokenArg(zeroize::Zeroizing::new(
                "coffersvc_x".to_owned(),
            ))),
            // Nothing listens there: a request fails to connect.
            api_url: Some("https://127.0.0.1:1".into()),
            ca_cert: Some(ca_cert),
            command: vec!["true".into()],
        }
    }

    #[test]
    fn a_ca_certificate_that_cannot_be_used_fails_before_any_request() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("missing.pem");
        let err = format!("{:#}", fetch(&run_args(missing.clone())).unwrap_err());
        assert!(
            err.starts_with(&format!("CA certificate {}: ", missing.display())),
            "{err}"
        );
        let garbage = tmp.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let err = format!("{:#}", fetch(&run_args(garbage.clone())).unwrap_err());
        assert!(
            err.starts_with(&format!("CA certificate {}: ", garbage.display())),
            "{err}"
        );
        assert!(err.contains("no PEM certificate found"), "{err}");

        // A real certificate is accepted: the failure is then the connection's.
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let good = tmp.path().join("ca.pem");
        std::fs::write(&good, cert.cert.pem()).unwrap();
        let err = format!("{:#}", fetch(&run_args(good)).unwrap_err());
        assert!(
            err.starts_with("cannot read the service's bindings: "),
            "{err}"
        );
        assert!(err.contains("cannot reach"), "{err}");
    }
}
