//! `coffer run`

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Args;

use super::TokenArg;

pub(super) const RUN_AFTER_HELP: &str = "\
Reads every secret binding of the service in one request, puts each value in CMD's environment
under its binding name (without COFFER_SERVICE_TOKEN), and then becomes CMD: CMD inherits the
standard streams, receives signals directly, and its exit status is coffer's. Exit status 127 if
CMD is not found, 126 if it cannot be run, 1 if the bindings cannot be read. A binding with a
reserved name, in any case (PATH, LD_PRELOAD, NODE_OPTIONS, JAVA_TOOL_OPTIONS, HTTPS_PROXY...:
docs/bindings.md lists them; deploys refuse them) is refused (exit status 1): it would change
how CMD is found, loaded or run. Store bindings are
not exported (they give secrets by name, not a fixed set of variables); a note on standard error
names them before CMD starts.

Example:
  COFFER_SERVICE_TOKEN=coffersvc_... coffer run -- node server.js";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The service token `coffer deploy` printed (prefer the environment variable: flags are
    /// visible to other local users)
    #[arg(
        long,
        env = "COFFER_SERVICE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub service_token: Option<TokenArg>,

    /// Server URL [default: http://127.0.0.1:8080]
    #[arg(long, env = "COFFER_API_URL", value_name = "URL")]
    pub api_url: Option<String>,

    /// PEM file of the CA that signed an https server's certificate (only it is trusted)
    #[arg(long, env = "COFFER_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// The command to run, and its arguments
    #[arg(
        value_name = "CMD",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<OsString>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Command;
    use crate::args::tests::parse;

    #[test]
    fn run_takes_the_command_after_its_flags_and_hides_the_token() {
        let run = |args: &[&str]| match parse(args).unwrap().command {
            Command::Run(r) => r,
            other => panic!("{other:?}"),
        };
        let r = run(&[
            "run",
            "--service-token",
            "coffersvc_sekrit",
            "--api-url",
            "http://h:1",
            "--",
            "sh",
            "-c",
            "echo --json",
        ]);
        assert_eq!(r.api_url.as_deref(), Some("http://h:1"));
        assert_eq!(r.command, ["sh", "-c", "echo --json"]);
        assert!(!format!("{r:?}").contains("sekrit"));
        // Without `--`, the command's own flags are its.
        let r = run(&["run", "node", "--inspect", "server.js"]);
        assert_eq!(r.command, ["node", "--inspect", "server.js"]);
        let err = parse(&["run"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(parse(&["run", "--"]).is_err());
    }

    #[test]
    fn run_takes_a_ca_certificate_before_the_command() {
        let run = |args: &[&str]| match parse(args).unwrap().command {
            Command::Run(r) => r,
            other => panic!("{other:?}"),
        };
        let r = run(&["run", "--ca-cert", "/etc/coffer/ca.pem", "--", "env"]);
        assert_eq!(r.ca_cert, Some(PathBuf::from("/etc/coffer/ca.pem")));
        assert_eq!(r.command, ["env"]);
        // After the command it is the command's.
        let r = run(&["run", "env", "--ca-cert", "x.pem"]);
        assert_eq!(r.command, ["env", "--ca-cert", "x.pem"]);
    }
}
