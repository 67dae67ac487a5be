//! `coffer store ...`

use coffer_api::ErrorCode;
use coffer_client::{Direction, StoreOrder};

use super::connect;
use crate::args::{ConnArgs, DirectionArg, StoreCommand, StoreOrderArg};
use crate::output::{self, Format};
use crate::resolve;

pub async fn run(conn: &ConnArgs, command: StoreCommand) -> anyhow::Result<()> {
    let format = Format::of(conn);
    let client = &connect(conn).await?;
    let text = match command {
        StoreCommand::Create(args) => {
            let store = client.create_store(args.name()).await?;
            output::store(&store, format)
        }
        StoreCommand::List(args) => {
            let page = client
                .list_stores(
                    args.page.page,
                    args.page.per_page,
                    args.order.map(store_order),
                    args.direction.map(direction),
                )
                .await?;
            output::store_list(&page, format)
        }
        StoreCommand::Get(store) => {
            let store = resolve::store(client, store.id()).await?;
            output::store(&client.get_store(&store.id).await?, format)
        }
        StoreCommand::Delete(args) => {
            let store = resolve::store(client, args.store.id()).await?;
            match client.delete_store(&store.id, args.force).await {
                Err(e) if e.api_code() == Some(ErrorCode::StoreNotEmpty.code()) => {
                    anyhow::bail!("{e} (with coffer: --force)")
                }
                other => other?,
            }
            let message = format!("Deleted store {}.", store.shown());
            output::deleted(&message, format)
        }
    };
    output::print(&text)?;
    Ok(())
}

fn store_order(o: StoreOrderArg) -> StoreOrder {
    match o {
        StoreOrderArg::Name => StoreOrder::Name,
        StoreOrderArg::Created => StoreOrder::Created,
        StoreOrderArg::Modified => StoreOrder::Modified,
    }
}

pub fn direction(d: DirectionArg) -> Direction {
    match d {
        DirectionArg::Asc => Direction::Asc,
        DirectionArg::Desc => Direction::Desc,
    }
}
