//! Shell completions and man pages, both generated from the clap definitions in `args`, so they
//! cannot drift from the parser. The man pages are committed in `dist/man/`; a test renders
//! them again and fails if the committed ones differ.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::args::{Cli, ShellArg};

/// `coffer completions SHELL`: the script, on standard output.
pub fn completions(shell: ShellArg) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::from(shell),
        &mut Cli::command(),
        "coffer",
        &mut script,
    );
    let mut out = std::io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(())
}

/// Every man page: (file name, roff text), one per visible command and subcommand, in a fixed
/// order (the top page first, then depth-first in definition order).
pub fn pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    fn walk(
        cmd: &clap::Command,
        prefix: &str,
        out: &mut Vec<(String, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        let name = if prefix.is_empty() {
            cmd.get_name().to_owned()
        } else {
            format!("{prefix}-{}", cmd.get_name())
        };
        // The page's own name ("coffer-store-create"), as `man` looks it up.
        let page = cmd.clone().display_name(name.clone());
        let mut text = Vec::new();
        clap_mangen::Man::new(page)
            .source(concat!("coffer ", env!("CARGO_PKG_VERSION")))
            .manual("Coffer Manual")
            .render(&mut text)
            .with_context(|| format!("cannot render the man page of {name}"))?;
        out.push((format!("{name}.1"), text));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, &name, out)?;
        }
        Ok(())
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    walk(&cmd, "", &mut out)?;
    Ok(out)
}

/// `coffer man --out-dir DIR`: writes every page into `DIR`.
pub fn write(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Err(crate::commands::UsageError(format!(
            "--out-dir {}: not a directory",
            dir.display()
        ))
        .into());
    }
    let pages = pages()?;
    // Pages of commands that are gone: a `coffer*.1` in the directory that was not rendered.
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("coffer")
            && name.ends_with(".1")
            && !pages.iter().any(|(page, _)| *page == name)
        {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
        }
    }
    for (name, text) in pages {
        let path = dir.join(&name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The command to run (from the repository's root) to bring `dist/man/` up to date; also
    /// after a version bump, since each page names the version.
    const REGENERATE: &str = "cargo run -p coffer-cli -- man --out-dir dist/man";

    /// CI's check that `dist/man/` is what the definitions render: same files, same bytes.
    #[test]
    fn committed_man_pages_are_up_to_date() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/man");
        let committed: BTreeMap<String, Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}; run `{REGENERATE}`", dir.display()))
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                (name, std::fs::read(e.path()).unwrap())
            })
            .collect();
        let rendered: BTreeMap<String, Vec<u8>> = pages().unwrap().into_iter().collect();
        let stale: Vec<&String> = committed
            .keys()
            .filter(|k| !rendered.contains_key(*k))
            .collect();
        let changed: Vec<&String> = rendered
            .iter()
            .filter(|(k, v)| committed.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .collect();
        assert!(
            stale.is_empty() && changed.is_empty(),
            "dist/man is out of date (missing or different: {changed:?}; no longer made: \
             {stale:?}); run `{REGENERATE}` (delete dist/man/*.1 first if pages are gone)"
        );
    }

    /// Every visible command and subcommand has its page, and the page names each of its
    /// visible long options.
    #[test]
    fn every_command_has_a_page_with_its_options() {
        fn check(cmd: &clap::Command, prefix: &str, pages: &BTreeMap<String, String>) {
            let name = if prefix.is_empty() {
                cmd.get_name().to_owned()
            } else {
                format!("{prefix}-{}", cmd.get_name())
            };
            let page = pages
                .get(&format!("{name}.1"))
                .unwrap_or_else(|| panic!("no page for {name} in {:?}", pages.keys()));
            for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                if let Some(long) = arg.get_long() {
                    // roff escapes every hyphen.
                    let shown = format!("\\-\\-{}", long.replace('-', "\\-"));
                    assert!(page.contains(&shown), "{name}.1 does not name --{long}");
                }
            }
            for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                check(sub, &name, pages);
            }
        }
        let pages: BTreeMap<String, String> = pages()
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
            .collect();
        let mut cmd = Cli::command().disable_help_subcommand(true);
        cmd.build();
        check(&cmd, "", &pages);
        assert!(pages.contains_key("coffer-operator-rotate.1"));
        assert!(!pages.contains_key("coffer-help.1"));
    }
}
