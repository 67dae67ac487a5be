//! Streaming a consistent snapshot of the replicated state.

#![allow(unused_imports)]

use coffer_storage::*;
use coffer_types::*;

use crate::{PgStorage, not_yet};

pub(crate) async fn snapshot(
    s: &PgStorage,
    out: tokio::sync::mpsc::Sender<SnapshotPart>,
) -> Result<()> {
    let _ = s;
    let _ = out;
    Err(not_yet("snapshot"))
}
