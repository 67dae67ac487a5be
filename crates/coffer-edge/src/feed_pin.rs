//! The control plane's feed-signing key, pinned: what every feed answer and snapshot this edge
//! applies must be signed with.
//!
//! The key comes from `--feed-key` (what `coffer node create` printed), or, without it, from
//! the first upstream that answers `GET /replication/v1/feed-key` (trust on first use). Either
//! way it is written to `DIR/feed.pub` and never changes afterwards: a later `--feed-key` that
//! disagrees stops the edge at start, and data signed by any other key is refused (an alarm;
//! the edge keeps serving what it has). To move an edge to another control plane (a new key),
//! give it an empty data dir.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use coffer_replication::sign::FeedKey;

use crate::status::EdgeStatus;
use crate::upstream::Upstreams;
use crate::{EdgeError, data_dir_error};

/// The pin, in the data dir: 64 lowercase hex digits and a newline.
pub(crate) const FEED_KEY_FILE: &str = "feed.pub";

/// The key pinned in `dir`, if any. A file that is not a key is refused (it is never
/// silently replaced).
pub(crate) fn load(dir: &Path) -> Result<Option<FeedKey>, EdgeError> {
    let path = dir.join(FEED_KEY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(data_dir_error(
                dir,
                format!("cannot read the pinned feed key {FEED_KEY_FILE}: {e}"),
            ));
        }
    };
    FeedKey::parse(&text).map(Some).map_err(|e| {
        data_dir_error(
            dir,
            format!(
                "{FEED_KEY_FILE} is not a feed key ({e}); restore it, or give the data dir up (an edge pins the key once)"
            ),
        )
    })
}

/// Writes the pin (mode 0644: it is a public key) through a temporary file, then syncs the
/// directory, so that a crash or power loss leaves no pin or the whole pin, and a pin once
/// reported written stays.
pub(crate) fn store(dir: &Path, key: &FeedKey) -> Result<(), EdgeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!("{FEED_KEY_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(format!("{}\n", key.to_hex()).as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(FEED_KEY_FILE))?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| data_dir_error(dir, format!("cannot write {FEED_KEY_FILE}: {e}")))
}

/// The key to pin at start: the stored one, the given one (stored now), or `None` (to be
/// learnt from the first upstream that answers). A given key that disagrees with the stored
/// one is refused. Trust on first use is for a first start only: a data dir that already
/// holds a replica (`has_replica`) but no pin (an edge from before pinning, or a pin lost)
/// needs `--feed-key`, or whoever answered the next request could name a key of its own and
/// sign whatever it likes over the replica's cluster.
pub(crate) fn resolve(
    dir: &Path,
    given: Option<FeedKey>,
    has_replica: bool,
) -> Result<Option<FeedKey>, EdgeError> {
    match (load(dir)?, given) {
        (Some(pinned), Some(given)) if pinned != given => Err(EdgeError::FeedKeyMismatch {
            path: dir.join(FEED_KEY_FILE),
            given: given.to_hex(),
            pinned: pinned.to_hex(),
        }),
        (Some(pinned), _) => Ok(Some(pinned)),
        (None, Some(given)) => {
            store(dir, &given)?;
            Ok(Some(given))
        }
        (None, None) if has_replica => Err(EdgeError::FeedKeyRequired {
            path: dir.join(FEED_KEY_FILE),
        }),
        (None, None) => Ok(None),
    }
}

/// Trust on first use: asks the upstreams in turn for the feed key until one answers, and
/// pins what it says. Resolves only once a key is pinned (or never, if this node is revoked
/// meanwhile: the edge stops then).
pub(crate) async fn learn(dir: &Path, upstreams: &Upstreams, status: &Arc<EdgeStatus>) -> FeedKey {
    let mut upstream = 0;
    let mut wait = Duration::from_millis(200);
    let mut failures = 0u64;
    loop {
        match upstreams.feed_key(upstream).await {
            Ok(key) => {
                if let Err(e) = store(dir, &key) {
                    // Never used unpinned: the next start would ask again, and could be told
                    // another key while the replica holds what this one verified.
                    tracing::error!(error = %e, "cannot store the pinned feed key; retrying");
                    status.set_error(format!("cannot pin the feed key: {e}"));
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                    continue;
                }
                tracing::warn!(
                    upstream = %upstreams.urls[upstream],
                    feed_key = %key,
                    "pinned the feed key the upstream gave at this first connection (trust on first use); compare it with what `coffer node create` printed, or give --feed-key"
                );
                return key;
            }
            Err(e) if e.is_revocation() => {
                tracing::error!(upstream = %upstreams.urls[upstream], "this edge's node was revoked: it stops serving and discards its replica");
                status.revoke(format!(
                    "{} refused the node token: {e}",
                    upstreams.urls[upstream]
                ));
                std::future::pending::<()>().await;
            }
            Err(e) => {
                if failures.is_multiple_of(10) {
                    tracing::warn!(upstream = %upstreams.urls[upstream], error = %e, "cannot learn the feed key yet; retrying");
                }
                status.set_error(format!("{}: feed key: {e}", upstreams.urls[upstream]));
                failures += 1;
                upstream = (upstream + 1) % upstreams.urls.len();
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> FeedKey {
        FeedKey::from_bytes([b; 32])
    }

    #[test]
    fn a_pin_is_stored_once_and_a_different_key_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert_eq!(
            resolve(dir, None, false).unwrap(),
            None,
            "nothing pinned yet"
        );
        assert_eq!(resolve(dir, Some(key(1)), false).unwrap(), Some(key(1)));
        assert_eq!(load(dir).unwrap(), Some(key(1)), "stored");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(FEED_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        // Without --feed-key, and with the same key: the pin.
        assert_eq!(resolve(dir, None, true).unwrap(), Some(key(1)));
        assert_eq!(resolve(dir, Some(key(1)), true).unwrap(), Some(key(1)));
        let refused = resolve(dir, Some(key(2)), true).unwrap_err();
        let text = refused.to_string();
        assert!(
            matches!(refused, EdgeError::FeedKeyMismatch { .. }),
            "{text}"
        );
        assert!(
            text.contains(&key(2).to_hex()) && text.contains(&key(1).to_hex()),
            "{text}"
        );
        assert!(!text.contains('\n'), "one line: {text}");
        assert_eq!(load(dir).unwrap(), Some(key(1)), "the pin is unchanged");
    }

    #[test]
    fn a_malformed_pin_is_refused_not_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join(FEED_KEY_FILE), "not a key\n").unwrap();
        for given in [None, Some(key(3))] {
            let e = resolve(dir, given, false).unwrap_err();
            assert!(e.to_string().contains("feed.pub is not a feed key"), "{e}");
        }
        assert_eq!(
            std::fs::read_to_string(dir.join(FEED_KEY_FILE)).unwrap(),
            "not a key\n"
        );
    }

    #[test]
    fn a_replica_without_a_pin_needs_the_key_given() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let refused = resolve(dir, None, true).unwrap_err();
        let text = refused.to_string();
        assert!(
            matches!(refused, EdgeError::FeedKeyRequired { .. }),
            "{text}"
        );
        assert!(
            text.contains("--feed-key") && !text.contains('\n'),
            "{text}"
        );
        assert_eq!(load(dir).unwrap(), None, "nothing pinned by the refusal");
        // Given, it is pinned and used.
        assert_eq!(resolve(dir, Some(key(4)), true).unwrap(), Some(key(4)));
        assert_eq!(load(dir).unwrap(), Some(key(4)));
    }
}
