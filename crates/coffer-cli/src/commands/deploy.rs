//! `coffer deploy --config FILE`: checks the file's bindings, then deploys them in one request.

use std::io::Write;

use super::{Problems, connect};
use crate::args::{ConnArgs, DeployArgs};
use crate::table::one_line;
use crate::{config, output};

pub async fn run(conn: &ConnArgs, args: DeployArgs) -> anyhow::Result<()> {
    let file = args.config.display().to_string();
    // The file is checked in full before the connection settings, and before any request.
    let loaded = config::load(&args.config);
    let warnings = match &loaded {
        Ok(config) => &config.warnings,
        Err(problems) => &problems.warnings,
    };
    {
        let mut err = std::io::stderr().lock();
        for warning in warnings {
            writeln!(err, "warning: {}: {}", one_line(&file), one_line(warning))?;
        }
    }
    let config = loaded.map_err(|p| {
        Problems(
            p.problems
                .into_iter()
                .map(|problem| format!("{file}: {problem}"))
                .collect(),
        )
    })?;
    let client = connect(conn).await?;
    let deployed = client.deploy_service(&config.deploy).await?;
    // Zeroized on drop, like `deployed` itself.
    let text = output::service_deployed(&deployed, conn.json);
    output::print(&text)?;
    Ok(())
}
