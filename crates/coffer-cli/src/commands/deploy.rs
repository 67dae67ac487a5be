//! `coffer deploy [--config FILE]`: checks the file's bindings, then deploys them in one
//! request. Without `--config`, the file is the one wrangler configuration in the current
//! directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Problems, UsageError, connect};
use crate::args::{ConnArgs, DeployArgs};
use crate::config;
use crate::output::{self, Format};
use crate::table::one_line;

/// The files `coffer deploy` reads without `--config`, as wrangler names them.
const DEFAULT_CONFIGS: [&str; 3] = ["wrangler.toml", "wrangler.jsonc", "wrangler.json"];

/// The one wrangler configuration file in `dir`; an error names none or all of them.
fn default_config(dir: &Path) -> Result<PathBuf, UsageError> {
    let found: Vec<&str> = DEFAULT_CONFIGS
        .into_iter()
        .filter(|name| dir.join(name).exists())
        .collect();
    match found.as_slice() {
        [one] => Ok(PathBuf::from(one)),
        [] => Err(UsageError(format!(
            "no wrangler.toml, wrangler.jsonc or wrangler.json in {}: give the file with --config",
            dir.display()
        ))),
        several => Err(UsageError(format!(
            "{} configuration files in {}: {}; say which to deploy with --config",
            several.len(),
            dir.display(),
            several.join(", ")
        ))),
    }
}

pub async fn run(conn: &ConnArgs, args: DeployArgs) -> anyhow::Result<()> {
    let path = match args.config {
        Some(path) => path,
        None => default_config(&std::env::current_dir()?)?,
    };
    let file = path.display().to_string();
    // The file is checked in full before the connection settings, and before any request.
    let loaded = config::load(&path);
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
    let text = output::service_deployed(&deployed, Format::of(conn));
    output::print(&text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_one_configuration_file_there_is() {
        let dir = tempfile::tempdir().unwrap();
        let err = default_config(dir.path()).unwrap_err().0;
        assert_eq!(
            err,
            format!(
                "no wrangler.toml, wrangler.jsonc or wrangler.json in {}: give the file with \
                 --config",
                dir.path().display()
            )
        );
        std::fs::write(dir.path().join("wrangler.jsonc"), "").unwrap();
        assert_eq!(
            default_config(dir.path()).unwrap(),
            PathBuf::from("wrangler.jsonc")
        );
        for (name, found) in [
            (
                "wrangler.toml",
                "2 configuration files in {}: wrangler.toml, wrangler.jsonc",
            ),
            (
                "wrangler.json",
                "3 configuration files in {}: wrangler.toml, wrangler.jsonc, wrangler.json",
            ),
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
            let err = default_config(dir.path()).unwrap_err().0;
            let found = found.replace("{}", &dir.path().display().to_string());
            assert_eq!(err, format!("{found}; say which to deploy with --config"));
        }
        std::fs::remove_file(dir.path().join("wrangler.jsonc")).unwrap();
        std::fs::remove_file(dir.path().join("wrangler.toml")).unwrap();
        assert_eq!(
            default_config(dir.path()).unwrap(),
            PathBuf::from("wrangler.json")
        );
    }
}
