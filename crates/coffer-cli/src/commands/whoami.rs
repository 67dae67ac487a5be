//! `coffer whoami`: who the API token is (`GET /client/v4/user/tokens/verify`).

use super::connect_instance;
use crate::args::ConnArgs;
use crate::output::{self, Format};

pub async fn run(conn: &ConnArgs) -> anyhow::Result<()> {
    // The token says which account it belongs to: no account id is needed.
    let verified = connect_instance(conn)?.verify_token().await?;
    output::print(&output::whoami(&verified, Format::of(conn)))?;
    Ok(())
}
