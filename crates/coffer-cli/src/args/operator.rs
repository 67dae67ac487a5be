//! `coffer operator ...`: the instance operator's own token.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Issue a new instance-operator token, print it once, and make every earlier one stop
    /// working (audited in the operator's account)
    #[command(long_about = ROTATE_LONG_ABOUT)]
    Rotate(OperatorRotateArgs),
}

const ROTATE_LONG_ABOUT: &str = "\
Issue a new instance-operator token, print it once, and make every earlier one stop working \
(audited in the operator's account, by token id only).

Two forms:
  coffer operator rotate --data-dir DIR   on the data dir of a stopped server (recovery when
                                          the operator token is lost or leaked)
  coffer operator rotate                  through the running server, with the current
                                          operator token (COFFER_API_URL, COFFER_API_TOKEN)";

#[derive(Debug, Args)]
pub struct OperatorRotateArgs {
    /// Rotate offline, on the data dir of a stopped server (without it: through the running
    /// server, with the current operator token)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// With --data-dir of an instance on PostgreSQL: its database
    #[command(flatten)]
    pub database: super::server::DatabaseArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Command;
    use crate::args::tests::parse;

    #[test]
    fn operator_rotate_parses_both_forms() {
        let rotate = |args: &[&str]| match parse(args).unwrap().command {
            Command::Operator {
                command: OperatorCommand::Rotate(args),
                conn,
            } => (args.data_dir, conn.json),
            other => panic!("{other:?}"),
        };
        assert_eq!(rotate(&["operator", "rotate"]), (None, false));
        assert_eq!(
            rotate(&["operator", "rotate", "--data-dir", "/d", "--json"]),
            (Some(PathBuf::from("/d")), true)
        );
        assert!(parse(&["operator", "rotate", "extra"]).is_err());
        assert!(parse(&["operator"]).is_err());
        assert!(parse(&["operator", "rotate", "--data-dir"]).is_err());
    }
}
