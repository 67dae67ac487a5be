//! Edges in-process against a real control plane (`coffer_server::serve` on 127.0.0.1:0):
//! bootstrap and follow, refusing corrupted feeds and snapshots (through a corrupting proxy),
//! static stability, refusing another cluster, and access events reaching the audit log.

mod access;
#[path = "../common/mod.rs"]
mod common;
mod corrupting_proxy;
mod corruption;
mod follow;
mod health;
mod revocation;
mod upstreams;
