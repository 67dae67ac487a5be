//! Reloading what a running process reads from files — its TLS certificate and key, and on an
//! edge the CA it trusts for its upstreams — without a restart: when asked ([`Reload::request`],
//! which the CLI sends on SIGHUP) and when the files change (looked at every
//! [`Reload::poll`]).
//!
//! A reload that fails (a file unreadable, a key that does not match its certificate) is logged
//! and changes nothing: the process goes on with what it had.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

/// How often the files are looked at when no one asks: a `stat` per file each time.
const DEFAULT_POLL: Duration = Duration::from_secs(10);

/// Asks the holders of file-backed settings to read them again. Cloned into each of them;
/// every clone shares the requests and the counts.
#[derive(Clone, Debug)]
pub struct Reload {
    requests: Arc<watch::Sender<u64>>,
    poll: Duration,
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    done: AtomicU64,
    refused: AtomicU64,
}

impl Default for Reload {
    fn default() -> Reload {
        Reload::new()
    }
}

impl Reload {
    pub fn new() -> Reload {
        Reload::with_poll(DEFAULT_POLL)
    }

    /// Files are looked at every `poll` (tests use a short one).
    pub fn with_poll(poll: Duration) -> Reload {
        Reload {
            requests: Arc::new(watch::Sender::new(0)),
            poll,
            counts: Arc::default(),
        }
    }

    /// Every holder reads its files again now, changed or not.
    pub fn request(&self) {
        self.requests.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// How many reloads were done and how many refused so far, by every holder.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counts.done.load(Ordering::Acquire),
            self.counts.refused.load(Ordering::Acquire),
        )
    }

    /// Runs `load` whenever a reload is asked for, or when one of `files` changed since the
    /// last look. `load` says what went wrong, if anything; `what` names the setting in the log
    /// lines. Ends once every other [`Reload`] is dropped; a server's watch, whose `Reload` the
    /// CLI keeps for SIGHUP, is aborted when the server stops.
    pub async fn watch<F>(self, what: &'static str, files: Vec<PathBuf>, load: F)
    where
        F: Fn() -> Result<(), String> + Clone + Send + 'static,
    {
        let mut requests = self.requests.subscribe();
        let (poll, counts) = (self.poll, self.counts.clone());
        // Only a receiver is needed from here: holding `self` would keep the requests' sender
        // alive, and the watch would never see the last `Reload` go.
        drop(self);
        let mut seen = stamps(&files);
        let mut ticker = tokio::time::interval(poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            let asked = tokio::select! {
                changed = requests.changed() => match changed {
                    Ok(()) => true,
                    Err(_) => return,
                },
                _ = ticker.tick() => false,
            };
            let now = stamps(&files);
            if !asked && now == seen {
                continue;
            }
            seen = now;
            let why = if asked { "asked" } else { "files changed" };
            // On the blocking pool: loading reads files, and a file that blocks (a FIFO named
            // in place of a certificate) must not hold a runtime worker.
            let outcome = match tokio::task::spawn_blocking({
                let load = load.clone();
                move || load()
            })
            .await
            {
                Ok(outcome) => outcome,
                Err(e) => Err(format!("the reload task failed: {e}")),
            };
            match outcome {
                Ok(()) => {
                    counts.done.fetch_add(1, Ordering::AcqRel);
                    tracing::info!(what, why, "reloaded; new connections use it");
                }
                Err(e) => {
                    counts.refused.fetch_add(1, Ordering::AcqRel);
                    tracing::error!(what, why, "reload refused, keeping the one in use: {e}");
                }
            }
        }
    }
}

/// Refuses what is not a regular file (a FIFO or a device would block or never end a read).
pub(crate) fn regular_file(path: &Path) -> Result<(), String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    if meta.is_file() {
        Ok(())
    } else {
        Err(format!("{}: not a regular file", path.display()))
    }
}

/// What tells a file changed: its modification time, length and inode (a file replaced by a
/// rename has a new inode even within one timestamp tick). A missing file has no stamp.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamps(files: &[PathBuf]) -> Vec<Option<Stamp>> {
    files.iter().map(|f| stamp(f)).collect()
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn until(count: &AtomicUsize, want: usize) {
        for _ in 0..500 {
            if count.load(Ordering::SeqCst) >= want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} loads, wanted {want}", count.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn loads_when_asked_and_when_a_file_changes_and_not_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cert.pem");
        std::fs::write(&file, "one").unwrap();
        let reload = Reload::with_poll(Duration::from_millis(20));
        let loads = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(reload.clone().watch("test", vec![file.clone()], {
            let loads = loads.clone();
            move || {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }));
        // Unchanged files: several polls, no load.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(loads.load(Ordering::SeqCst), 0);
        reload.request();
        until(&loads, 1).await;
        // Replaced by a rename, as deployment tools do.
        let next = dir.path().join("next.pem");
        std::fs::write(&next, "two, longer").unwrap();
        std::fs::rename(&next, &file).unwrap();
        until(&loads, 2).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(loads.load(Ordering::SeqCst), 2, "one load per change");
        // The watch ends once every handle is gone.
        drop(reload);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the watch ends when the last Reload is dropped")
            .unwrap();
    }
}
