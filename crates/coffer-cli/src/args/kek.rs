//! `coffer kek ...`: the instance's key-encryption key.

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum KekCommand {
    /// Make a new KEK version and rewrap every key under it in the background (instance
    /// operator token only); prints the new version
    Rotate(KekRotateArgs),
    /// Show the KEK's versions, the keys each wraps, and a rotation's progress (instance
    /// operator token only)
    Status,
}

#[derive(Debug, Args)]
pub struct KekRotateArgs {
    /// Wait until every key is rewrapped and the old version retired
    #[arg(long)]
    pub wait: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Command;
    use crate::args::tests::parse;

    #[test]
    fn kek_commands_parse() {
        let kek = |args: &[&str]| match parse(args).unwrap().command {
            Command::Kek { command, conn } => (command, conn.json),
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            kek(&["kek", "rotate"]),
            (KekCommand::Rotate(KekRotateArgs { wait: false }), false)
        ));
        assert!(matches!(
            kek(&["kek", "rotate", "--wait", "--json"]),
            (KekCommand::Rotate(KekRotateArgs { wait: true }), true)
        ));
        assert!(matches!(
            kek(&["kek", "status", "--json"]),
            (KekCommand::Status, true)
        ));
        assert!(parse(&["kek", "rotate", "extra"]).is_err());
        assert!(parse(&["kek"]).is_err());
    }
}
