//! `coffer node ...`: edge nodes.

use clap::{Args, Subcommand};

use super::one_of;

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Register an edge node and print its node token, once (instance operator token only;
    /// --account-id is not needed)
    Create(NodeCreateArgs),
    /// List the instance's edge nodes, revoked ones included (instance operator token only)
    List,
    /// Revoke an edge node: its token stops working (instance operator token only)
    Revoke(NodeRevokeArgs),
}

#[derive(Debug, Args)]
#[group(id = "node_name", required = true, multiple = false)]
pub struct NodeCreateArgs {
    /// The node's name (same as --name)
    #[arg(value_name = "NAME")]
    name_pos: Option<String>,

    /// The node's name: 1 to 63 ASCII letters, digits, '-', '_' and '.', unique among the nodes
    /// that are not revoked
    #[arg(long = "name", value_name = "NAME")]
    name: Option<String>,
}

impl NodeCreateArgs {
    pub fn name(&self) -> &str {
        one_of(&self.name, &self.name_pos)
    }
}

#[derive(Debug, Args)]
pub struct NodeRevokeArgs {
    /// The node's name (nodes not revoked are matched first), or its id (32 hex characters)
    #[arg(value_name = "NODE")]
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Command;
    use crate::args::tests::parse;

    #[test]
    fn node_commands_take_a_name_or_an_id() {
        let node = |args: &[&str]| match parse(args).unwrap().command {
            Command::Node { command, conn } => (command, conn.json),
            other => panic!("{other:?}"),
        };
        for args in [
            &["node", "create", "edge-1.fra", "--json"][..],
            &["node", "create", "--name", "edge-1.fra", "--json"],
        ] {
            match node(args) {
                (NodeCommand::Create(c), true) => assert_eq!(c.name(), "edge-1.fra"),
                other => panic!("{other:?}"),
            }
        }
        assert!(parse(&["node", "create", "a", "--name", "b"]).is_err());
        assert!(matches!(
            node(&["node", "list"]),
            (NodeCommand::List, false)
        ));
        match node(&["node", "revoke", "abc"]) {
            (NodeCommand::Revoke(r), false) => assert_eq!(r.id, "abc"),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["node"]).is_err());
        assert!(parse(&["node", "create"]).is_err());
        assert!(parse(&["node", "create", "a", "b"]).is_err());
        assert!(parse(&["node", "revoke"]).is_err());
        assert!(parse(&["node", "list", "x"]).is_err());
    }
}
