//! `coffer node ...`: the instance's edge nodes (instance operator token).
//!
//! Nodes belong to the instance, like accounts: the account id is not needed. A new node's
//! token is printed once, on standard output, by `node create`, and nowhere else.

use super::connect_instance;
use crate::args::{ConnArgs, NodeCommand};
use crate::output::{self, Format};
use crate::resolve;

pub async fn run(conn: &ConnArgs, command: NodeCommand) -> anyhow::Result<()> {
    let format = Format::of(conn);
    let client = connect_instance(conn)?;
    match command {
        NodeCommand::Create(args) => {
            let created = client.create_node(args.name()).await?;
            // Zeroized on drop, like `created` itself.
            let text = output::node_created(&created, format);
            output::print(&text)?;
        }
        NodeCommand::List => {
            let page = client.list_nodes().await?;
            output::print(&output::node_list(&page, format))?;
        }
        NodeCommand::Revoke(args) => {
            let node = resolve::node(&client, &args.id).await?;
            let node = client.revoke_node(&node.id).await?;
            output::print(&output::node_revoked(&node, format))?;
        }
    }
    Ok(())
}
