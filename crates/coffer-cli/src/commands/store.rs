//! `coffer store ...`

use coffer_api::ErrorCode;
use coffer_client::{Client, Direction, StoreOrder};

use crate::args::{DirectionArg, StoreCommand, StoreOrderArg};
use crate::output;

pub async fn run(client: &Client, command: StoreCommand, json: bool) -> anyhow::Result<()> {
    let text = match command {
        StoreCommand::Create(args) => {
            let store = client.create_store(args.name()).await?;
            output::store(&store, json)
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
            output::store_list(&page, json)
        }
        StoreCommand::Get(store) => output::store(&client.get_store(store.id()).await?, json),
        StoreCommand::Delete(args) => {
            match client.delete_store(args.store.id(), args.force).await {
                Err(e) if e.api_code() == Some(ErrorCode::StoreNotEmpty.code()) => {
                    anyhow::bail!("{e} (with coffer: --force)")
                }
                other => other?,
            }
            output::deleted(&format!("Deleted store {}.", args.store.id()), json)
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
