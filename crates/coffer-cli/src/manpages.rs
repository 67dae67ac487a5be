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

/// The manual every page names in its `.TH` line: how `coffer man` tells its own pages apart.
const MANUAL: &str = "Coffer Manual";

/// Whether `text` is a page `coffer man` wrote for `name` (`coffer-x.1`): its `.TH` line, as
/// clap_mangen writes it, names the page, section 1, a `coffer VERSION` source (of any
/// version) and Coffer's manual. Another program's `coffer*.1` is not.
fn is_our_page(name: &str, text: &[u8]) -> bool {
    let Some(stem) = name.strip_suffix(".1") else {
        return false;
    };
    let text = String::from_utf8_lossy(text);
    let Some(th) = text.lines().take(20).find_map(|l| l.strip_prefix(".TH ")) else {
        return false;
    };
    let mut words = th.split_whitespace();
    if words.next() != Some(stem) || words.next() != Some("1") {
        return false;
    }
    // The quoted fields, in order: the source, then the manual.
    let quoted: Vec<&str> = th.split('"').skip(1).step_by(2).collect();
    match quoted.as_slice() {
        [.., source, manual] => {
            *manual == MANUAL
                && source
                    .strip_prefix("coffer ")
                    .is_some_and(|v| !v.is_empty() && !v.contains(' '))
        }
        _ => false,
    }
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
            .manual(MANUAL)
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

/// `coffer man --out-dir DIR`: writes every page into `DIR`, and removes the pages of commands
/// that are gone: a `coffer*.1` that was not rendered now and whose `.TH` line shows
/// `coffer man` wrote it ([`is_our_page`]). Any other file is left alone, so the directory may
/// be a shared one (`/usr/local/share/man/man1`).
pub fn write(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Err(crate::usage::UsageError(format!(
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
            && entry.file_type().is_ok_and(|t| t.is_file())
            && std::fs::read(entry.path()).is_ok_and(|text| is_our_page(&name, &text))
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

    /// A regeneration removes the pages `coffer man` wrote for commands that are gone (of any
    /// version), and nothing else: not another program's `coffer*.1`, not other files.
    #[test]
    fn only_stale_pages_of_coffers_own_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let ours = |name: &str, version: &str| {
            format!(
                ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n.TH {name} 1  \"coffer {version}\" \"Coffer Manual\"\n.SH NAME\n"
            )
        };
        let files = [
            // Ours, for commands that are gone: removed.
            ("coffer-gone.1", ours("coffer-gone", "0.0.1")),
            (
                "coffer-old-cmd.1",
                ours("coffer-old-cmd", env!("CARGO_PKG_VERSION")),
            ),
            // Not ours: kept.
            (
                "coffer-tools.1",
                ".TH coffer-tools 1 \"2024\" \"coffer-tools 2.0\" \"Coffer Tools Manual\"\n"
                    .to_owned(),
            ),
            (
                "coffeemaker.1",
                ".TH coffeemaker 1 \"\" \"coffee 1\" \"User Commands\"\n".to_owned(),
            ),
            ("coffer-misnamed.1", ours("coffer-other", "0.1.0")),
            ("coffer-empty.1", String::new()),
            ("notes.txt", "coffer".to_owned()),
        ];
        for (name, text) in &files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        write(dir.path()).unwrap();
        let left: std::collections::BTreeSet<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        for gone in ["coffer-gone.1", "coffer-old-cmd.1"] {
            assert!(!left.contains(gone), "{gone} kept: {left:?}");
        }
        for kept in [
            "coffer-tools.1",
            "coffeemaker.1",
            "coffer-misnamed.1",
            "coffer-empty.1",
            "notes.txt",
            "coffer.1",
            "coffer-store-create.1",
        ] {
            assert!(left.contains(kept), "{kept} removed: {left:?}");
        }
        // What it writes is recognised as its own.
        let (name, text) = pages().unwrap().remove(0);
        assert!(is_our_page(&name, &text));
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
