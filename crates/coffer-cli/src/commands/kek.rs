//! `coffer kek ...`: the instance's key-encryption key (instance operator token).

use std::time::Duration;

use super::connect_instance;
use crate::args::{ConnArgs, KekCommand};
use crate::output::{self, Format};

/// How often `kek rotate --wait` asks how far the rewrap is.
const POLL: Duration = Duration::from_millis(500);

pub async fn run(conn: &ConnArgs, command: KekCommand) -> anyhow::Result<()> {
    let format = Format::of(conn);
    let client = connect_instance(conn)?;
    match command {
        KekCommand::Status => {
            let status = client.kek_status().await?;
            output::print(&output::kek_status(&status, format))?;
        }
        KekCommand::Rotate(args) => {
            let started = client.rotate_kek().await?;
            if args.wait {
                loop {
                    let status = client.kek_status().await?;
                    match status.rotation {
                        None => break,
                        Some(r) if r.state == "failed" => anyhow::bail!(
                            "the rewrap stopped: {}",
                            r.error.unwrap_or_else(|| "no reason given".into())
                        ),
                        Some(_) => tokio::time::sleep(POLL).await,
                    }
                }
            }
            output::print(&output::kek_rotated(&started, args.wait, format))?;
        }
    }
    Ok(())
}
